"""The agent's cloud side: identity, activation, control and data connections."""
