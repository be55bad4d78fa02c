"""camera-agent: connects local ONVIF/RTSP cameras to a cloud video platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("camera-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
