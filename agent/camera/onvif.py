"""The agent's ONVIF client: sessions (`OnvifSession`), discovery details and the
`CameraControl` implementation (`OnvifControl`).

Only the modules of `agent.camera` import `onvif` and `zeep`; they return plain dataclasses,
never zeep objects, and raise `agent.errors` only. See `session`, `media`, `imaging`, `ptz`.
"""

from __future__ import annotations

from agent.camera.control import OnvifControl
from agent.camera.media import CameraDetails
from agent.camera.media import StreamProfileInfo as StreamProfile
from agent.camera.models import DeviceInfo
from agent.camera.session import REQUEST_TIMEOUT, OnvifCamera, OnvifSession, map_error

__all__ = [
    "REQUEST_TIMEOUT",
    "CameraDetails",
    "DeviceInfo",
    "OnvifCamera",
    "OnvifControl",
    "OnvifSession",
    "StreamProfile",
    "map_error",
]
