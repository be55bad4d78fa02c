"""Agent self-update: journal, releases side by side, the arbiter that tries and rolls back."""
