"""Sans-I/O protocol codecs and state machines: bytes in, events out; no asyncio, no logging."""
