"""Opening ONVIF sessions for the inventory: candidate credentials, time limits, and the
outcome of one inspection as a camera state and a reason."""

from __future__ import annotations

import asyncio
import contextlib
import inspect as pyinspect
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from agent.camera import onvif as onvif_client
from agent.camera.models import CameraControl
from agent.camera.onvif import CameraDetails, OnvifSession
from agent.discovery.records import CameraState
from agent.errors import (
    AgentError,
    AuthError,
    NotConfigured,
    ProtocolError,
    Unavailable,
    Unsupported,
)
from agent.secret import Credentials

log = logging.getLogger(__name__)

#: Seconds one whole inspection (connect and every detail call) may take.
INSPECT_TIMEOUT = 30.0
#: Longest wait for the first inspection of the process, which loads the WSDL documents.
WARM_WAIT = 5.0

# The ONVIF client parses each WSDL document the first time a service is created, in a thread,
# and caches it; sessions started together before that would each parse it again. So the first
# inspection of the process runs alone (for at most WARM_WAIT) and the others wait for it.
_warmed = False
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)

# Whether OnvifSession takes a list of candidate credentials (and reports the one that worked).
_CANDIDATES = "credentials" in pyinspect.signature(OnvifSession.__init__).parameters


class ManagedControl(CameraControl, Protocol):
    """A CameraControl the inventory owns and closes."""

    async def close(self) -> None: ...


@dataclass
class Inspection:
    """What one look at a camera found. `session` is open only when asked to keep it."""

    state: CameraState
    reason: str = ""
    details: CameraDetails | None = None
    credentials: Credentials | None = None
    session: OnvifSession | None = None


def split_xaddr(xaddr: str) -> tuple[str, int]:
    """Host and port of a device service address; ProtocolError if it has no host."""
    try:
        parts = urlsplit(xaddr)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ProtocolError(f"bad device service address: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProtocolError(f"not an HTTP device service address: {xaddr[:200]!r}")
    return parts.hostname, port


def _new_session(
    host: str, port: int, candidates: Sequence[Credentials], timeout: float
) -> OnvifSession:
    kwargs: dict[str, Any] = {"timeout": timeout}
    if _CANDIDATES:
        kwargs["credentials"] = tuple(candidates)
        return OnvifSession(host, port, None, None, **kwargs)
    first = candidates[0] if candidates else None
    user = first.username if first else None
    password = first.password.reveal() if first else None
    return OnvifSession(host, port, user, password, **kwargs)


async def connect(
    xaddr: str, candidates: Sequence[Credentials], timeout: float
) -> tuple[OnvifSession, Credentials | None]:
    """A connected session and the credentials it uses. Raises AuthError, NotConfigured,
    Unavailable or ProtocolError."""
    host, port = split_xaddr(xaddr)
    tries: list[Sequence[Credentials]]
    tries = [candidates] if _CANDIDATES else [[c] for c in candidates] or [[]]
    last: AgentError = NotConfigured("no credentials configured for this camera")
    for group in tries:
        session = _new_session(host, port, group, timeout)
        try:
            async with asyncio.timeout(INSPECT_TIMEOUT):
                await session.connect()
                if not _CANDIDATES:
                    await session.device_info()  # the only way to test the credentials
        except AuthError as exc:
            await session.close()
            last = exc
            continue
        except TimeoutError:
            await session.close()
            raise Unavailable("timed out") from None
        except BaseException:
            await session.close()
            raise
        used = getattr(session, "credentials_used", None) if _CANDIDATES else None
        if used is None and group:
            used = group[0]
        return session, used
    raise last


def _is_warm() -> bool:
    return _warmed


@contextlib.asynccontextmanager
async def _warm_gate() -> AsyncIterator[None]:
    """Run alone if no inspection has run in this process yet (see `_warmed`)."""
    global _warmed
    if _warmed:
        yield
        return
    lock = _gates.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    try:
        async with asyncio.timeout(WARM_WAIT):
            await lock.acquire()
    except TimeoutError:
        yield  # the first one is slow: go ahead regardless
        return
    if _is_warm():  # the first one finished while we waited
        lock.release()
        yield
        return
    try:
        yield
    finally:
        _warmed = True
        lock.release()


async def inspect(
    xaddr: str,
    candidates: Sequence[Credentials],
    timeout: float,
    *,
    session: OnvifSession | None = None,
    keep: bool = False,
) -> Inspection:
    """Read a camera's details, through `session` if given (it is never closed here), else
    through a new one (closed unless `keep`). Never raises for the camera's faults."""
    own = session is None
    used: Credentials | None = None
    try:
        async with _warm_gate(), asyncio.timeout(INSPECT_TIMEOUT):
            if session is None:
                session, used = await connect(xaddr, candidates, timeout)
            details = await session.details()
    except TimeoutError:
        result = Inspection(CameraState.UNREACHABLE, "timed out")
    except NotConfigured as exc:
        result = Inspection(CameraState.UNAUTHORIZED, str(exc) or "no credentials configured")
        if not await _reachable(xaddr, timeout):  # say what the camera would have said first
            result = Inspection(CameraState.UNREACHABLE, "no answer on the ONVIF port")
    except AuthError as exc:
        result = Inspection(CameraState.UNAUTHORIZED, str(exc) or "credentials rejected")
    except Unavailable as exc:
        result = Inspection(CameraState.UNREACHABLE, str(exc) or "unreachable")
    except (ProtocolError, Unsupported) as exc:
        result = Inspection(CameraState.NOT_ONVIF, str(exc) or "not an ONVIF device")
    except Exception as exc:  # one broken camera must not stop the others
        log.debug("inspecting %s failed", xaddr, exc_info=True)
        result = Inspection(CameraState.ERROR, f"{type(exc).__name__}: {exc}"[:300])
    else:
        result = Inspection(CameraState.ONLINE, "", details, used)
        if own and keep:
            result.session, session = session, None
    if own and session is not None:
        await session.close()
    return result


async def _reachable(xaddr: str, timeout: float) -> bool:
    """True if a TCP connection to the device service address opens."""
    try:
        host, port = split_xaddr(xaddr)
        async with asyncio.timeout(min(timeout, 5.0)):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError, ProtocolError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def control_factory() -> Any:
    """The OnvifControl class, or None where the control layer is not available."""
    return getattr(onvif_client, "OnvifControl", None)


async def open_control(
    session: OnvifSession, *, frames: Callable[[], str] | None = None
) -> ManagedControl:
    """A control on a connected session; Unsupported if this build has no control layer.
    `frames` gives the URL of the agent's shared session of the camera (snapshots)."""
    factory = control_factory()
    if factory is None:
        raise Unsupported("camera control is not available in this build")
    control: ManagedControl = factory(session, frames=frames)
    return control
