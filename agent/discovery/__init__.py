"""Camera discovery (WS-Discovery, mDNS) and the inventory."""
