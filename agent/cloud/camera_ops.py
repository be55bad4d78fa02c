"""What the cloud's camera commands do on the camera: one request payload in, camera
actions through `CameraControl`, a result out (docs/commands.md). Transport, ordering,
deadlines and the audit log belong to the caller."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import secret
from agent.camera.models import CameraControl, ContinuousMove, DeviceInfo
from agent.cloud.camera_config import (
    camera_config_get,
    camera_config_set,
    percent,
    validate_config,
)
from agent.errors import AgentError, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

PTZ_COMMANDS = (
    "move_continuous",
    "move_absolute",
    "stop",
    "goto_preset",
    "set_preset",
    "remove_preset",
    "goto_home",
    "set_home",
)
_PRESET_COMMANDS = ("goto_preset", "set_preset", "remove_preset")
_SPEEDS = ("up", "down", "left", "right", "in", "out")
#: Axes of an absolute move: pan, tilt, zoom in the camera's position spaces.
_AXES = ("x", "y", "zoom")
_OPPOSITE = (("up", "down"), ("left", "right"), ("in", "out"))
#: Keys the caller may leave in a payload besides the command's own.
_ENVELOPE = ("camera_id", "deadline_ms")
MAX_PRESET_NAME = 64
MAX_PASSWORD = 64
#: Seconds to wait for a camera to come back after a firmware upload, and between polls.
FIRMWARE_BACK_TIMEOUT = 120.0
FIRMWARE_POLL = 1.0
#: Seconds one poll may take; after this many seconds without seeing the camera go down,
#: its answer counts as the camera being back.
POLL_TIMEOUT = 5.0
NO_REBOOT_GRACE = 20.0

Progress = Callable[[str, int, str], Awaitable[None]]


@dataclass(frozen=True)
class PtzRequest:
    command: str
    move: ContinuousMove | None = None
    preset: str | None = None
    #: x, y, zoom of `move_absolute`; None keeps an axis where the camera holds it.
    position: tuple[float | None, float | None, float | None] | None = None


def _unknown(payload: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(str(k) for k in payload if k not in known and k not in _ENVELOPE)
    if extra:
        raise InvalidArgument(f"unknown field(s): {', '.join(extra)[:200]}")


def _payload(payload: object) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise InvalidArgument("the payload must be an object")
    return payload


def _preset(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_PRESET_NAME
        or not value.isprintable()
        or value != value.strip()
    ):
        raise InvalidArgument(f"preset must be 1..{MAX_PRESET_NAME} printable characters")
    return value


def _coordinate(value: object, name: str) -> float:
    """A finite JSON number (not a boolean); its range is the camera's to check."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise InvalidArgument(f"{name} must be a finite number")
    return result


def validate_ptz(payload: object) -> PtzRequest:
    """Check a camera_ptz payload: command, speeds 0..100 (integers), preset name, the
    position numbers of an absolute move (at least one of them, with no other command)."""
    data = _payload(payload)
    _unknown(data, ("command", *_SPEEDS, "preset", *_AXES))
    command = data.get("command")
    if not isinstance(command, str) or command not in PTZ_COMMANDS:
        raise InvalidArgument(f"command must be one of {', '.join(PTZ_COMMANDS)}")
    speeds = {k: percent(data[k], k) if data.get(k) is not None else 0 for k in _SPEEDS}
    x, y, zoom = (_coordinate(data[k], k) if data.get(k) is not None else None for k in _AXES)
    preset = data.get("preset")
    if command in _PRESET_COMMANDS:
        return PtzRequest(command, preset=_preset(preset))
    if preset is not None:
        _preset(preset)
    if command == "move_absolute":
        if x is None and y is None and zoom is None:
            raise InvalidArgument("move_absolute needs x, y or zoom")
        if any(speeds.values()):
            raise InvalidArgument("move_absolute takes a position (x, y, zoom), not speeds")
        return PtzRequest(command, position=(x, y, zoom))
    if x is not None or y is not None or zoom is not None:
        raise InvalidArgument("x, y and zoom belong to move_absolute")
    if command != "move_continuous":
        return PtzRequest(command)
    for a, b in _OPPOSITE:
        if speeds[a] and speeds[b]:
            raise InvalidArgument(f"{a} and {b} cannot both be non-zero")
    move = ContinuousMove(
        up=speeds["up"],
        down=speeds["down"],
        left=speeds["left"],
        right=speeds["right"],
        zoom_in=speeds["in"],
        zoom_out=speeds["out"],
    )
    return PtzRequest(command, move=move)


async def ptz(control: CameraControl, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run one camera_ptz command. `set_preset` over an existing name replaces it."""
    req = validate_ptz(payload)
    if req.command == "move_continuous" and req.move is not None:
        await control.ptz_continuous(req.move)  # all zero = stop; arms the safety Stop
    elif req.command == "move_absolute" and req.position is not None:
        await control.ptz_absolute(*req.position)  # verified: NotApplied if it stays away
    elif req.command == "stop":
        await control.ptz_stop()
    elif req.command == "goto_home":
        await control.ptz_home_apply()
    elif req.command == "set_home":
        await control.ptz_home_save()
    elif req.preset is not None:
        if req.command == "goto_preset":
            await control.ptz_preset_apply(req.preset)
        elif req.command == "remove_preset":
            await control.ptz_preset_delete(req.preset)
        else:
            if req.preset in await control.ptz_presets():
                await control.ptz_preset_delete(req.preset)
            await control.ptz_preset_create(req.preset)
    return {}


# Auth.


@dataclass(frozen=True)
class AuthChange:
    login: str | None = None
    password: str | None = None
    port: int | None = None


def validate_auth(payload: object) -> AuthChange:
    """Check a camera_auth_set payload: login, password (printable ASCII), port 1..65535."""
    data = _payload(payload)
    _unknown(data, ("login", "password", "port"))
    login, password, port = data.get("login"), data.get("password"), data.get("port")
    if login is not None and (
        not isinstance(login, str) or not 0 < len(login) <= 64 or not login.isprintable()
    ):
        raise InvalidArgument("login must be 1..64 printable characters")
    if password is not None and (
        not isinstance(password, str)
        or not 0 < len(password) <= MAX_PASSWORD
        or not password.isprintable()
        or not password.isascii()
    ):
        raise InvalidArgument(f"password must be 1..{MAX_PASSWORD} printable ASCII characters")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
    ):
        raise InvalidArgument("port must be an integer 1..65535")
    if login is None and password is None and port is None:
        raise InvalidArgument("give a login, a password or a port")
    if password is not None:
        secret.register(password)  # masked in any log line from here on
    return AuthChange(login, password, port)


async def camera_auth_get(control: CameraControl, login: str, password: str) -> dict[str, Any]:
    """The Auth the agent uses: its login and password, and the camera's HTTP port."""
    ports = await control.get_network()
    return {"login": login, "password": password, "port": ports.http.port}


async def camera_auth_set(
    control: CameraControl,
    current_login: str,
    payload: Mapping[str, Any],
    *,
    current_password: str | None = None,
) -> tuple[dict[str, Any], str | None, int | None]:
    """Change the camera; return (Auth after, the agent's new password or None, new port or None).

    A `login` other than the agent's own names another camera user whose password changes
    (refused when the camera has no such user); the agent keeps its own login. The port
    changes first (the camera answers before it moves its services), then the password.
    The Auth's password is the new one, else `current_password`.
    """
    change = validate_auth(payload)
    other = change.login is not None and change.login != current_login
    if other:
        if change.password is None:
            raise InvalidArgument("give the password for the other user")
        users = {u.user_name for u in await control.list_users()}
        if change.login not in users:
            raise InvalidArgument("the camera has no such user")
    ports = await control.get_network()
    new_port = change.port if change.port not in (None, ports.http.port) else None
    if new_port is not None:
        await control.set_network(http=new_port)
    if change.password is not None:
        user = change.login if other and change.login is not None else current_login
        try:
            await control.set_user_password(user, change.password)
        except AgentError as exc:
            if new_port is None:
                raise
            raise type(exc)(
                f"the camera's port changed to {new_port}, but the password did not: {exc}"
            ) from None
    new_password = change.password if not other else None
    auth = {
        "login": current_login,
        "password": new_password if new_password is not None else current_password,
        "port": new_port or ports.http.port,
    }
    return auth, new_password, new_port


# Firmware.


async def _poll(control: CameraControl) -> DeviceInfo | None:
    try:
        return await asyncio.wait_for(control.device_info(), POLL_TIMEOUT)
    except (AgentError, TimeoutError):
        return None


async def wait_back(
    control: CameraControl,
    before: str,
    *,
    timeout: float = FIRMWARE_BACK_TIMEOUT,
    poll: float = FIRMWARE_POLL,
    reconnect: Callable[[], Awaitable[CameraControl]] | None = None,
) -> DeviceInfo:
    """Poll device_info until the camera has gone down and answers again. With `reconnect`,
    each poll asks for a current control (a reboot may have closed the old session)."""
    start = time.monotonic()
    seen_down = False
    while True:
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise Unavailable(f"the camera did not come back within {timeout:.0f} s")
        current: CameraControl | None = control
        if reconnect is not None:
            try:
                async with asyncio.timeout(POLL_TIMEOUT):
                    current = await reconnect()
            except (AgentError, TimeoutError):
                current = None
        info = await _poll(current) if current is not None else None
        if info is None:
            seen_down = True
        elif seen_down or elapsed >= NO_REBOOT_GRACE:
            return info
        await asyncio.sleep(poll)


async def firmware(
    control: CameraControl,
    path: Path,
    size: int,
    progress: Progress,
    *,
    send: Callable[[], Awaitable[None]] | None = None,
    reconnect: Callable[[], Awaitable[CameraControl]] | None = None,
) -> dict[str, Any]:
    """Hand an image (downloaded and verified) to the camera and wait for it to come back.

    `send` uploads with a vendor protocol (it reports its own `upload` progress); without it
    the image goes over ONVIF. Returns {"firmware_before", "firmware_after", "duration_ms"}.
    Reports the stages `upload` and `rebooting`; the caller reports `download`, `verify`,
    `done` and `failed`.
    """
    started = time.monotonic()
    before = (await control.device_info()).firmware_version
    if send is not None:
        await send()
    else:
        await progress("upload", 0, f"sending {size} bytes to the camera")
        await control.firmware_upgrade(path, size)
        await progress("upload", 100, "the camera accepted the image")
    await progress("rebooting", 0, "waiting for the camera to restart")
    after = (await wait_back(control, before, reconnect=reconnect)).firmware_version
    log.info("camera firmware %s -> %s", before, after)
    await progress("rebooting", 100, f"the camera is back with firmware {after}")
    return {
        "firmware_before": before,
        "firmware_after": after,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }


__all__ = [
    "AuthChange",
    "PtzRequest",
    "camera_auth_get",
    "camera_auth_set",
    "camera_config_get",
    "camera_config_set",
    "firmware",
    "ptz",
    "validate_auth",
    "validate_config",
    "validate_ptz",
    "wait_back",
]
