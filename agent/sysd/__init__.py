"""systemd integration: the notify protocol sender used for readiness and the watchdog."""
