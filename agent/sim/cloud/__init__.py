"""Simulated cloud: Watcher, Central, activation server, endpoint and streampoints."""
