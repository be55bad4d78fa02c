"""The inventory's data: one `CameraRecord` per camera, its stable id, its JSON forms and the
re-check schedule (pure functions; the timing constants are module names tests can patch)."""

from __future__ import annotations

import contextlib
import random
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from agent.errors import ProtocolError
from agent.secret import Credentials, Secret

#: First retry delay after a failed check, seconds; doubles per further failure.
RETRY_BASE = 2.0
#: Longest delay between checks of a failing camera, seconds.
RETRY_MAX = 300.0
#: Each delay is multiplied by a random factor in [1 - JITTER, 1 + JITTER].
JITTER = 0.2
#: Most addresses remembered per camera.
MAX_ADDRESSES = 16
#: Longest text field kept from a camera (a lying camera must not fill the state file).
MAX_TEXT = 256
#: Most profiles kept per camera.
MAX_PROFILES = 16

SOURCES = frozenset({"wsd", "mdns", "probe", "config", "state", "api"})
#: How the agent talks to a camera: ONVIF, or RTSP only (added by its URL; its `xaddr` is then
#: its main stream URL, without credentials).
KINDS = ("onvif", "rtsp")


class CameraState(StrEnum):
    ONLINE = "online"
    UNAUTHORIZED = "unauthorized"
    UNREACHABLE = "unreachable"
    NOT_ONVIF = "not_onvif"
    ERROR = "error"


def camera_id(endpoint_reference: str, serial: str, xaddr: str) -> str:
    """A stable UUID for a camera, so it survives address changes.

    A `urn:uuid:` endpoint reference (what ONVIF cameras announce) is the camera's own UUID;
    otherwise a UUID is derived from the endpoint reference, else the serial, else the address.
    """
    ref = endpoint_reference.strip()
    if ref.lower().startswith("urn:uuid:"):
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(ref[9:]))
    basis = ref or (f"serial:{serial}" if serial else f"xaddr:{xaddr}")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"camera-agent:{basis}"))


def xaddr_host(xaddr: str) -> str:
    """The host part of an ONVIF device service address ("" if it has none)."""
    try:
        return urlsplit(xaddr).hostname or ""
    except ValueError:
        return ""


def xaddr_for(host: str, port: int) -> str:
    """The usual device service address of a camera at `host:port`."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/onvif/device_service"


def retry_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds before the next check of a camera that failed `failures` times in a row:
    RETRY_BASE doubling up to RETRY_MAX, jittered by +-JITTER."""
    exponent = min(max(failures, 1) - 1, 32)
    delay = min(RETRY_BASE * 2.0**exponent, RETRY_MAX)
    return _jitter(delay, rng)


def check_delay(
    state: CameraState, failures: int, interval: float, rng: random.Random | None = None
) -> float:
    """Seconds until a camera in `state` is checked again.

    Online cameras, and cameras that need new credentials or do not speak ONVIF (retrying
    sooner would not change the answer), wait `interval`; unreachable and failing ones back off.
    """
    if state in (CameraState.ONLINE, CameraState.UNAUTHORIZED, CameraState.NOT_ONVIF):
        return _jitter(interval, rng)
    return min(retry_delay(failures, rng), max(interval, RETRY_BASE))


def _jitter(delay: float, rng: random.Random | None) -> float:
    pick = rng or random
    return float(delay * pick.uniform(1.0 - JITTER, 1.0 + JITTER))


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT] if value is not None else ""


@dataclass(eq=False)
class CameraRecord:
    """Everything the agent knows about one camera. `credentials` never leaves through
    `to_json()` or `repr()`."""

    id: str
    xaddr: str
    kind: str = "onvif"
    name: str = ""
    endpoint_reference: str = ""
    addresses: list[str] = field(default_factory=list)
    manufacturer: str = ""
    model: str = ""
    firmware_version: str = ""
    serial_number: str = ""
    hardware_id: str = ""
    profiles: list[dict[str, Any]] = field(default_factory=list)
    snapshot_uri: str | None = None
    ptz: bool = False
    imaging: bool = False
    backchannel: bool = False  # an audio output: two-way audio over the ONVIF backchannel
    state: CameraState = CameraState.UNREACHABLE
    reason: str = ""
    last_seen: float | None = None
    last_error: str = ""
    sources: set[str] = field(default_factory=set)
    paused: bool = False  # a paused camera streams nothing and opens no tunnels
    credentials: Credentials | None = field(default=None, repr=False)
    failures: int = field(default=0, repr=False)
    next_check: float = field(default=0.0, repr=False)
    checked_at: float | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return xaddr_host(self.xaddr)

    @property
    def serial_key(self) -> str:
        """Manufacturer and serial number ("" when the serial is unknown)."""
        if not self.serial_number:
            return ""
        return f"{self.manufacturer.casefold()}/{self.serial_number.casefold()}"

    def see_address(self, xaddr: str) -> None:
        """Record the current device service address; older ones are kept, newest last."""
        self.xaddr = xaddr
        host = xaddr_host(xaddr)
        if host:
            if host in self.addresses:
                self.addresses.remove(host)
            self.addresses.append(host)
            del self.addresses[:-MAX_ADDRESSES]

    def to_json(self) -> dict[str, Any]:
        """The public record: the `discover --json` fields plus last_seen and sources."""
        return {
            "id": self.id,
            "address": self.address,
            "xaddr": self.xaddr,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "firmware_version": self.firmware_version,
            "serial_number": self.serial_number,
            "hardware_id": self.hardware_id,
            "state": str(self.state),
            "reason": self.reason,
            "profiles": [dict(p) for p in self.profiles],
            "snapshot_uri": self.snapshot_uri,
            "ptz": self.ptz,
            "imaging": self.imaging,
            "backchannel": self.backchannel,
            "endpoint_reference": self.endpoint_reference,
            "last_seen": self.last_seen,
            "sources": sorted(self.sources),
            "run_state": "paused" if self.paused else "running",
            "kind": self.kind,
            "name": self.name,
        }

    def to_state(self) -> dict[str, Any]:
        """The record as stored in the state directory, credentials included (0600 file)."""
        data = self.to_json()
        data["addresses"] = list(self.addresses)
        data["last_error"] = self.last_error
        if self.credentials is not None:
            data["credentials"] = {
                "username": self.credentials.username,
                "password": self.credentials.password.reveal(),
            }
        return data

    @classmethod
    def from_state(cls, data: object) -> CameraRecord:
        """A stored record; ProtocolError if it is unusable. The state is not trusted: every
        camera starts `unreachable` until it is checked again."""
        if not isinstance(data, dict):
            raise ProtocolError("camera record is not an object")
        ident, xaddr = data.get("id"), data.get("xaddr")
        if not isinstance(ident, str) or not isinstance(xaddr, str) or not xaddr:
            raise ProtocolError("camera record without id or xaddr")
        try:
            ident = str(uuid.UUID(ident))
        except ValueError:
            raise ProtocolError(f"camera record with a bad id {ident[:40]!r}") from None
        rec = cls(id=ident, xaddr=_text(xaddr)[:1024])
        rec.kind = "rtsp" if data.get("kind") == "rtsp" else "onvif"
        rec.name = _text(data.get("name"))
        for name in ("endpoint_reference", "manufacturer", "model", "firmware_version"):
            setattr(rec, name, _text(data.get(name)))
        rec.serial_number = _text(data.get("serial_number"))
        rec.hardware_id = _text(data.get("hardware_id"))
        rec.last_error = _text(data.get("last_error"))
        rec.ptz = data.get("ptz") is True
        rec.imaging = data.get("imaging") is True
        rec.backchannel = data.get("backchannel") is True
        snapshot = data.get("snapshot_uri")
        rec.snapshot_uri = _text(snapshot)[:1024] if isinstance(snapshot, str) else None
        profiles = data.get("profiles")
        if isinstance(profiles, list):
            rec.profiles = [p for p in profiles[:MAX_PROFILES] if isinstance(p, dict)]
        addresses = data.get("addresses")
        if isinstance(addresses, list):
            rec.addresses = [_text(a) for a in addresses[-MAX_ADDRESSES:] if isinstance(a, str)]
        sources = data.get("sources")
        if isinstance(sources, list):
            rec.sources = {s for s in sources if isinstance(s, str) and s in SOURCES}
        seen = data.get("last_seen")
        if isinstance(seen, int | float) and not isinstance(seen, bool):
            rec.last_seen = float(seen)
        creds = data.get("credentials")
        if isinstance(creds, dict):
            user, password = creds.get("username"), creds.get("password")
            if isinstance(user, str) and isinstance(password, str):
                rec.credentials = Credentials(user, Secret(password))
        rec.paused = data.get("run_state") == "paused"
        rec.state = CameraState.UNREACHABLE
        rec.reason = "not checked since the agent started"
        return rec
