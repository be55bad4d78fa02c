"""The agent's side of cameras: the ONVIF client and camera commands."""
