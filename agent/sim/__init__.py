"""Simulators of the world around the agent: ONVIF cameras and the cloud."""
