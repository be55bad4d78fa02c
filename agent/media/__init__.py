"""Media: RTSP server/client pieces, relays, snapshots."""
