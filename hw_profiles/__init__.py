"""Hardware profiles: one TOML file per supported target, read by `agent.hw`."""
