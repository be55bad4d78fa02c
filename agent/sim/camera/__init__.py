"""The simulated ONVIF camera: SOAP services, RTSP video, WS-Discovery, fault injection."""
