"""Third-party servers the hardware-in-the-loop tests run the agent against (built at test time)."""
