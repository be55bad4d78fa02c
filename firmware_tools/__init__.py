"""Signed update bundles, agent self-update and camera firmware push (see docs/updates.md)."""
