"""The agent's local HTTP API (ONVIF camera control, inventory, snapshots, OpenAPI)."""

from agent.api.server import (
    ApiServer,
    CameraDirectory,
    CameraRecordLike,
    build_app,
    requires_token,
)

__all__ = ["ApiServer", "CameraDirectory", "CameraRecordLike", "build_app", "requires_token"]
