"""Thin asyncio adapters around the protocol cores."""
