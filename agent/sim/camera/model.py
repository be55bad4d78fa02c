"""State of one simulated ONVIF camera: identity, users, network, media profiles, PTZ,
imaging and injected faults. Pure Python, no I/O; both clocks are injectable.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from agent.errors import InvalidArgument, LimitExceeded, NotFound
from agent.sim.camera.imaging import Imaging
from agent.sim.camera.ptz import PtzController

MAX_USERS = 16
MAX_USERNAME = 32
MAX_PASSWORD = 64
MAX_SOAP_LATENCY = 60.0
MAX_CLOCK_SKEW = 10 * 365 * 86400.0
MAX_FORCED_FAULTS = 100
#: Longest `advertised_address` fault value.
MAX_ADVERTISED = 64
#: Largest magnitude of an `imaging_scale` bound.
MAX_IMAGING_SCALE = 100000.0
#: Services the `services_off` fault can take away (the device service always stays).
OPTIONAL_SERVICES = ("media", "media2", "ptz", "imaging")
#: Rotate modes of the video source (ON turns the picture by 180 degrees).
ROTATE_MODES = ("OFF", "ON")
_QNAME = re.compile(r"^[A-Za-z_][\w.-]*:[A-Za-z_][\w.-]*$")
_OPERATION = re.compile(r"^[A-Za-z_]\w{0,63}$")


class UserLevel(StrEnum):
    ADMINISTRATOR = "Administrator"
    OPERATOR = "Operator"
    USER = "User"

    @property
    def rank(self) -> int:
        return {"User": 1, "Operator": 2, "Administrator": 3}[self.value]


class UnknownUser(NotFound):
    """No user has the given name."""


class UsernameClash(InvalidArgument):
    """A user with that name exists already."""


class FixedUser(InvalidArgument):
    """The built-in administrator cannot be deleted or demoted."""


class TooManyUsers(LimitExceeded):
    """The user table is full."""


class UnknownProfile(NotFound):
    """No media profile has the given token."""


class UnknownConfig(NotFound):
    """No configuration has the given token."""


class ConfigInvalid(InvalidArgument):
    """Configuration values the encoder cannot take."""


class ServiceNotSupported(InvalidArgument):
    """A network service the camera cannot provide (e.g. HTTPS)."""


class PortInUse(InvalidArgument):
    """Two network services on one port."""


@dataclass
class User:
    username: str
    password: str = field(repr=False)
    level: UserLevel


@dataclass
class Identity:
    manufacturer: str
    model: str
    firmware_version: str
    serial_number: str
    hardware_id: str
    name: str
    location: str


@dataclass(frozen=True)
class NetworkProtocol:
    name: str  # HTTP, HTTPS or RTSP
    enabled: bool
    ports: tuple[int, ...]


@dataclass(frozen=True)
class NetworkInterface:
    token: str
    name: str
    mac: str
    ipv4: str
    prefix_length: int = 24
    mtu: int = 1500


@dataclass(frozen=True)
class VideoSource:
    token: str = "VideoSource_1"  # noqa: S105 - ONVIF reference token, not a secret
    width: int = 1280
    height: int = 720
    framerate: float = 25.0
    config_token: str = "VideoSourceConfig_1"  # noqa: S105 - reference token
    config_name: str = "VideoSourceConfig"
    rotate: str = "OFF"  # ONVIF Rotate Mode: OFF or ON (ON = 180 degrees)


@dataclass(frozen=True)
class AudioConfig:
    """G.711 mu-law audio of the main profile."""

    source_token: str = "AudioSource_1"  # noqa: S105 - reference token
    source_config_token: str = "AudioSourceConfig_1"  # noqa: S105 - reference token
    encoder_token: str = "AudioEncoderConfig_1"  # noqa: S105 - reference token
    encoding: str = "G711"  # Media2 name: PCMU
    bitrate_kbps: int = 64
    sample_rate_khz: int = 8


@dataclass(frozen=True)
class SpeakerConfig:
    """The speaker (audio output) a camera with two-way audio has, as Media announces it:
    tokens and layout as in tests/fixtures/onvif/hikvision-ds-2df7276-ael/GetProfiles.xml."""

    output_token: str = "AudioOutput_1"  # noqa: S105 - reference token
    output_config_token: str = "AudioOutputConfig_1"  # noqa: S105 - reference token
    decoder_token: str = "AudioDecoderConfig_1"  # noqa: S105 - reference token
    send_primacy: str = "www.onvif.org/ver20/HalfDuplex/Auto"
    output_level: int = 50


@dataclass
class VideoEncoderConfig:
    token: str
    name: str
    encoding: str  # H264 or H265
    width: int
    height: int
    fps_limit: int
    bitrate_kbps: int
    gov_length: int
    quality: float = 5.0
    profile: str = "Main"  # H.264/H.265 profile
    encoding_interval: int = 1


@dataclass(frozen=True)
class EncoderOptions:
    resolutions: tuple[tuple[int, int], ...]
    profiles: tuple[str, ...]
    fps_range: tuple[int, int] = (1, 30)
    bitrate_range: tuple[int, int] = (32, 8192)
    gov_range: tuple[int, int] = (1, 300)
    quality_range: tuple[int, int] = (1, 6)
    encoding_interval_range: tuple[int, int] = (1, 1)


@dataclass
class Profile:
    token: str
    name: str
    rtsp_path: str
    encoder: VideoEncoderConfig
    options: EncoderOptions
    audio: bool = False
    ptz: bool = False
    media2_only: bool = False


def _number(data: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"fault {key} must be a number")
    if math.isnan(value) or not lo <= value <= hi:
        raise InvalidArgument(f"fault {key} must be within [{lo:g}, {hi:g}]")
    return float(value)


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise InvalidArgument(f"fault {key} must be true or false")
    return value


def _forced(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) > MAX_FORCED_FAULTS:
        raise InvalidArgument(f"fault soap_faults must map at most {MAX_FORCED_FAULTS} operations")
    for op, code in value.items():
        if not isinstance(op, str) or not _OPERATION.match(op):
            raise InvalidArgument(f"soap_faults: {op!r} is not an operation name")
        if not isinstance(code, str) or not _QNAME.match(code):
            raise InvalidArgument(f"soap_faults: {code!r} is not a subcode like ter:InvalidArgVal")
    return dict(value)


def _operations(value: Any, key: str = "empty_ok_ops") -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_FORCED_FAULTS:
        raise InvalidArgument(f"fault {key} must list at most {MAX_FORCED_FAULTS} operation names")
    for op in value:
        if not isinstance(op, str) or not _OPERATION.match(op):
            raise InvalidArgument(f"{key}: {op!r} is not an operation name")
    return tuple(value)


def _latencies(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or len(value) > MAX_FORCED_FAULTS:
        raise InvalidArgument(f"fault op_latency must map at most {MAX_FORCED_FAULTS} operations")
    out: dict[str, float] = {}
    for op, seconds in value.items():
        if not isinstance(op, str) or not _OPERATION.match(op):
            raise InvalidArgument(f"op_latency: {op!r} is not an operation name")
        out[op] = _number({"op_latency": seconds}, "op_latency", 0.0, MAX_SOAP_LATENCY)
    return out


def _services(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or any(v not in OPTIONAL_SERVICES for v in value):
        raise InvalidArgument(
            f"fault services_off must list services among {', '.join(OPTIONAL_SERVICES)}"
        )
    if {"media", "media2"} <= set(value):
        raise InvalidArgument("fault services_off cannot take away both media and media2")
    return tuple(dict.fromkeys(value))


def _scale(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidArgument("fault imaging_scale must be null or [min, max]")
    bounds = {"imaging_scale": value[0]}, {"imaging_scale": value[1]}
    lo, hi = (_number(b, "imaging_scale", -MAX_IMAGING_SCALE, MAX_IMAGING_SCALE) for b in bounds)
    if not lo < hi:
        raise InvalidArgument("fault imaging_scale needs min below max")
    return (lo, hi)


def _split_advertised(value: str) -> tuple[str, int | None]:
    """("HOST", PORT or None) of "HOST", "HOST:PORT", "[V6]" or "[V6]:PORT"."""
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if not closed or (rest and port is None):
            raise ValueError(value)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, None
    ipaddress.ip_address(host)  # an address, never a name to resolve
    if port is None:
        return host, None
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(value)
    return host, number


def _advertised(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) > MAX_ADVERTISED:
            raise ValueError(value)
        _split_advertised(value)
    except ValueError:
        raise InvalidArgument(
            "fault advertised_address must be null or an IP address with an optional port, "
            'like "127.0.0.2:9" or "[::1]:9"'
        ) from None
    return value


@dataclass(frozen=True)
class Faults:
    """Misbehaviour switched on at run time (PUT /sim/faults)."""

    soap_latency: float = 0.0  # seconds added to every SOAP answer
    soap_faults: Mapping[str, str] = field(default_factory=dict)  # operation -> subcode
    soap_garbage: bool = False  # answer SOAP with junk and HTTP 200
    clock_skew: float = 0.0  # seconds added to the camera clock
    rtp_stall: bool = False  # RTSP keeps the session but stops sending RTP
    nonconforming_xml: bool = False  # GetDeviceInformation/GetProfiles answers break the schema
    imaging_scale: tuple[float, float] | None = None  # imaging 0..100 values shown on this scale
    ptz_degrees: bool = False  # PTZ positions and translations in degrees
    empty_ok_ops: tuple[str, ...] = ()  # operations answered with an empty HTTP 200
    ignored_ops: tuple[str, ...] = ()  # operations answered with an empty SOAP success only
    misplaced_xml: bool = False  # imaging settings and PTZ nodes with out-of-order elements
    ptz_ignore_timeout: bool = False  # ContinuousMove ignores Timeout and speed
    preset_refused_while_moving: bool = False  # SetPreset faults while PTZ moves
    advertised_address: str | None = None  # "HOST[:PORT]" put in service and media URIs
    op_latency: Mapping[str, float] = field(default_factory=dict)  # operation -> extra seconds
    services_off: tuple[str, ...] = ()  # services the camera does not offer
    snapshot_port: int | None = None  # snapshot URIs name this port (nothing answers there)

    @classmethod
    def from_json(cls, data: object, *, base: Faults | None = None) -> Faults:
        """Validate a JSON object; keys it omits keep the values of `base` (or defaults)."""
        if not isinstance(data, Mapping):
            raise InvalidArgument("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InvalidArgument(f"unknown fault(s): {', '.join(unknown)}")
        changes: dict[str, Any] = {}
        if "soap_latency" in data:
            changes["soap_latency"] = _number(data, "soap_latency", 0.0, MAX_SOAP_LATENCY)
        if "clock_skew" in data:
            changes["clock_skew"] = _number(data, "clock_skew", -MAX_CLOCK_SKEW, MAX_CLOCK_SKEW)
        for key in _FLAGS:
            if key in data:
                changes[key] = _flag(data, key)
        if "soap_faults" in data:
            changes["soap_faults"] = _forced(data["soap_faults"])
        if "empty_ok_ops" in data:
            changes["empty_ok_ops"] = _operations(data["empty_ok_ops"])
        if "ignored_ops" in data:
            changes["ignored_ops"] = _operations(data["ignored_ops"], "ignored_ops")
        if "imaging_scale" in data:
            changes["imaging_scale"] = _scale(data["imaging_scale"])
        if "advertised_address" in data:
            changes["advertised_address"] = _advertised(data["advertised_address"])
        if "op_latency" in data:
            changes["op_latency"] = _latencies(data["op_latency"])
        if "services_off" in data:
            changes["services_off"] = _services(data["services_off"])
        if "snapshot_port" in data:
            port = data["snapshot_port"]
            if port is not None and (
                isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
            ):
                raise InvalidArgument("fault snapshot_port must be null or a port 1..65535")
            changes["snapshot_port"] = port
        return replace(base or cls(), **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "soap_latency": self.soap_latency,
            "soap_faults": dict(self.soap_faults),
            "soap_garbage": self.soap_garbage,
            "clock_skew": self.clock_skew,
            "rtp_stall": self.rtp_stall,
            "nonconforming_xml": self.nonconforming_xml,
            "imaging_scale": None if self.imaging_scale is None else list(self.imaging_scale),
            "ptz_degrees": self.ptz_degrees,
            "empty_ok_ops": list(self.empty_ok_ops),
            "ignored_ops": list(self.ignored_ops),
            "misplaced_xml": self.misplaced_xml,
            "ptz_ignore_timeout": self.ptz_ignore_timeout,
            "preset_refused_while_moving": self.preset_refused_while_moving,
            "advertised_address": self.advertised_address,
            "op_latency": dict(self.op_latency),
            "services_off": list(self.services_off),
            "snapshot_port": self.snapshot_port,
        }

    def latency(self, operation: str | None) -> float:
        """Seconds to wait before answering `operation` (all answers, plus its own)."""
        extra = self.op_latency.get(operation, 0.0) if operation else 0.0
        return self.soap_latency + extra

    def offers(self, service: str) -> bool:
        """Whether the camera offers the service (`device`, `media`, `ptz`, ...)."""
        return service not in self.services_off

    def advertised(self) -> tuple[str, int | None] | None:
        """The (URL host, port or None) announced instead of the real address, if any."""
        if self.advertised_address is None:
            return None
        host, port = _split_advertised(self.advertised_address)
        return url_host(host), port


_FLAGS = (
    "soap_garbage",
    "rtp_stall",
    "nonconforming_xml",
    "ptz_degrees",
    "ptz_ignore_timeout",
    "preset_refused_while_moving",
    "misplaced_xml",
)


def url_host(host: str) -> str:
    """A host as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _mac(serial: str) -> str:
    digest = hashlib.sha256(serial.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))  # locally administered


def _hostname(name: str) -> str:
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return text[:63] or "camera"


def _default_profiles() -> list[Profile]:
    h264 = ("Baseline", "Main", "High")
    return [
        Profile(
            "main",
            "MainStream",
            "/live/main",
            VideoEncoderConfig("VideoEncoder_main", "MainStream", "H264", 1280, 720, 25, 2048, 50),
            EncoderOptions(((1280, 720), (960, 540), (640, 360)), h264),
            audio=True,
            ptz=True,
        ),
        Profile(
            "sub",
            "SubStream",
            "/live/sub",
            VideoEncoderConfig("VideoEncoder_sub", "SubStream", "H264", 640, 360, 15, 512, 30),
            EncoderOptions(((640, 360), (480, 270), (320, 180)), h264),
            ptz=True,
        ),
        Profile(
            "h265",
            "H265Stream",
            "/live/h265",
            VideoEncoderConfig("VideoEncoder_h265", "H265Stream", "H265", 640, 360, 10, 256, 20),
            EncoderOptions(((640, 360), (320, 180)), ("Main",)),
            media2_only=True,
        ),
    ]


class CameraModel:
    """Everything the ONVIF services read and change."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        name: str = "SimCam",
        manufacturer: str = "Simulated Optics",
        model: str = "SC-2000",
        serial_number: str = "SC2000",
        firmware_version: str = "1.0.0",
        host: str = "127.0.0.1",
        http_port: int = 80,
        rtsp_port: int = 554,
        location: str = "",
        hardware_id: str | None = None,
        faults: Faults | None = None,
        profiles: Sequence[Profile] | None = None,
        speaker: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self.identity = Identity(
            manufacturer=manufacturer,
            model=model,
            firmware_version=firmware_version,
            serial_number=serial_number,
            hardware_id=hardware_id or f"{model}-HW1",
            name=name,
            location=location,
        )
        self.fixed_user = username
        self.users: dict[str, User] = {username: User(username, password, UserLevel.ADMINISTRATOR)}
        self.host = host
        self.protocols: list[NetworkProtocol] = [
            NetworkProtocol("HTTP", True, (http_port,)),
            NetworkProtocol("HTTPS", False, (443,)),
            NetworkProtocol("RTSP", True, (rtsp_port,)),
        ]
        ipv4 = host if _is_ipv4(host) else "0.0.0.0"
        self.interface = NetworkInterface("eth0", "eth0", _mac(serial_number), ipv4)
        self.hostname = _hostname(name)
        self.boot_time = clock()
        self.faults = faults or Faults()
        self.video_source = VideoSource()
        self.audio = AudioConfig()
        #: The audio output behind the ONVIF backchannel; None: the camera has no speaker.
        self.speaker: SpeakerConfig | None = SpeakerConfig() if speaker else None
        chosen = list(profiles) if profiles is not None else _default_profiles()
        if not chosen or len({p.token for p in chosen}) != len(chosen):
            raise InvalidArgument("a camera needs media profiles with distinct tokens")
        self.profiles: dict[str, Profile] = {p.token: p for p in chosen}
        self.ptz = PtzController(monotonic())
        self.imaging = Imaging(monotonic())

    # Identity, clock, network.

    @property
    def endpoint_reference(self) -> str:
        """WS-Discovery endpoint reference, stable per serial number."""
        ref = uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.identity.serial_number}.sim-camera.invalid")
        return f"urn:uuid:{ref}"

    def now(self) -> float:
        """The camera clock (epoch seconds), including the injected skew."""
        return self.clock() + self.faults.clock_skew

    def reboot(self) -> None:
        """Record a restart: boot time now, motion stopped."""
        self.boot_time = self.clock()
        mono = self.monotonic()
        self.ptz.stop(mono)
        self.imaging.focus_stop(mono)

    def _protocol(self, name: str) -> NetworkProtocol:
        return next(p for p in self.protocols if p.name == name)

    def _set_port(self, name: str, port: int) -> None:
        self.protocols = [
            replace(p, ports=(port,)) if p.name == name else p for p in self.protocols
        ]

    @property
    def http_port(self) -> int:
        return self._protocol("HTTP").ports[0]

    @http_port.setter
    def http_port(self, port: int) -> None:
        self._set_port("HTTP", port)

    @property
    def rtsp_port(self) -> int:
        return self._protocol("RTSP").ports[0]

    @rtsp_port.setter
    def rtsp_port(self, port: int) -> None:
        self._set_port("RTSP", port)

    def set_protocols(self, protocols: Iterable[NetworkProtocol]) -> None:
        """Apply SetNetworkProtocols: all or nothing."""
        changes = {p.name: p for p in protocols}
        for p in changes.values():
            if p.name not in ("HTTP", "HTTPS", "RTSP"):
                raise ServiceNotSupported(f"unknown network protocol {p.name!r}")
            if not p.ports or any(not 0 < port < 65536 for port in p.ports):
                raise InvalidArgument(f"{p.name}: ports must be within 1..65535")
            if p.name == "HTTPS" and p.enabled:
                raise ServiceNotSupported("HTTPS is not supported by this camera")
            if p.name == "HTTP" and not p.enabled:
                raise InvalidArgument("HTTP cannot be disabled: it carries ONVIF")
        merged = [changes.get(p.name, p) for p in self.protocols]
        used = [port for p in merged if p.enabled for port in p.ports]
        if len(used) != len(set(used)):
            raise PortInUse("two enabled services share a port")
        self.protocols = [replace(p, ports=p.ports[:1]) for p in merged]

    def scopes(self) -> list[tuple[str, bool]]:
        """WS-Discovery/GetScopes scopes as (uri, fixed)."""
        base = "onvif://www.onvif.org/"
        has_ptz = self.faults.offers("ptz") and any(p.ptz for p in self.profiles.values())
        fixed = [
            "type/video_encoder",
            "type/audio_encoder",
            *(["type/ptz"] if has_ptz else []),
            "Profile/Streaming",
            "Profile/T",
            f"hardware/{quote(self.identity.model, safe='')}",
            f"MAC/{self.interface.mac}",
        ]
        config = [f"name/{quote(self.identity.name, safe='')}"]
        if self.identity.location:
            config.append(f"location/{quote(self.identity.location, safe='/')}")
        return [(base + s, True) for s in fixed] + [(base + s, False) for s in config]

    # Users.

    def user(self, username: str) -> User | None:
        return self.users.get(username)

    def create_users(self, users: Sequence[User]) -> None:
        names = [u.username for u in users]
        if len(set(names)) != len(names) or any(n in self.users for n in names):
            raise UsernameClash("a user with that name exists already")
        if len(self.users) + len(users) > MAX_USERS:
            raise TooManyUsers(f"at most {MAX_USERS} users")
        for u in users:
            _check_user(u.username, u.password)
        for u in users:
            self.users[u.username] = User(u.username, u.password, u.level)

    def set_users(self, users: Sequence[tuple[str, str | None, UserLevel]]) -> None:
        """Change password (when given) and level of existing users."""
        for username, password, level in users:
            if username not in self.users:
                raise UnknownUser(f"no user {username!r}")
            if username == self.fixed_user and level != UserLevel.ADMINISTRATOR:
                raise FixedUser(f"{username!r} is the built-in administrator")
            if password is not None:
                _check_user(username, password)
        for username, password, level in users:
            old = self.users[username]
            self.users[username] = User(
                username, old.password if password is None else password, level
            )

    def delete_users(self, usernames: Sequence[str]) -> None:
        for name in usernames:
            if name not in self.users:
                raise UnknownUser(f"no user {name!r}")
            if name == self.fixed_user:
                raise FixedUser(f"{name!r} is the built-in administrator")
        for name in usernames:
            self.users.pop(name, None)

    # Media.

    def profile(self, token: str) -> Profile:
        try:
            return self.profiles[token]
        except KeyError:
            raise UnknownProfile(f"no profile {token!r}") from None

    def media_profiles(self, *, media2: bool) -> list[Profile]:
        """Profiles the Media (ver10) or Media2 (ver20) service announces."""
        return [p for p in self.profiles.values() if media2 or not p.media2_only]

    @property
    def main_profile(self) -> Profile:
        """The first profile (the main stream)."""
        return next(iter(self.profiles.values()))

    def encoder_profile(self, config_token: str) -> Profile:
        """The profile that owns the video encoder configuration `config_token`."""
        for p in self.profiles.values():
            if p.encoder.token == config_token:
                return p
        raise UnknownConfig(f"no video encoder configuration {config_token!r}")

    def set_rotation(self, config_token: str, mode: str, degree: int | None) -> None:
        """Rotate the video source: Mode OFF, or ON with Degree 180 (the only one offered)."""
        if config_token != self.video_source.config_token:
            raise UnknownConfig(f"no video source configuration {config_token!r}")
        if mode not in ROTATE_MODES:
            raise ConfigInvalid(f"rotate mode {mode!r} is not one of {', '.join(ROTATE_MODES)}")
        if mode == "ON" and degree not in (None, 180):
            raise ConfigInvalid(f"rotation by {degree} degrees is not supported (only 180)")
        self.video_source = replace(self.video_source, rotate=mode)

    def update_encoder(self, config_token: str, **changes: Any) -> list[str]:
        """Validate and apply encoder changes; return the tokens of the affected profiles."""
        prof = self.encoder_profile(config_token)
        new = replace(prof.encoder, **changes)
        _check_encoder(new, prof.options, prof.encoder.encoding)
        prof.encoder = new
        return [prof.token]


def _is_ipv4(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.version == 4 and not addr.is_unspecified


def _check_user(username: str, password: str) -> None:
    if not 0 < len(username) <= MAX_USERNAME or not username.isprintable() or " " in username:
        raise InvalidArgument(f"user names are 1..{MAX_USERNAME} printable characters, no spaces")
    if not 0 < len(password) <= MAX_PASSWORD or not password.isprintable():
        raise InvalidArgument(f"passwords are 1..{MAX_PASSWORD} printable characters")


def _in(name: str, value: float, bounds: tuple[int, int]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigInvalid(f"{name} {value} is outside [{bounds[0]}, {bounds[1]}]")


def _check_encoder(cfg: VideoEncoderConfig, opts: EncoderOptions, encoding: str) -> None:
    if cfg.encoding != encoding:
        raise ConfigInvalid(f"this encoder only produces {encoding}")
    if (cfg.width, cfg.height) not in opts.resolutions:
        raise ConfigInvalid(f"resolution {cfg.width}x{cfg.height} is not available")
    if cfg.profile not in opts.profiles:
        raise ConfigInvalid(f"profile {cfg.profile!r} is not supported")
    _in("FrameRateLimit", cfg.fps_limit, opts.fps_range)
    _in("BitrateLimit", cfg.bitrate_kbps, opts.bitrate_range)
    _in("GovLength", cfg.gov_length, opts.gov_range)
    _in("Quality", cfg.quality, opts.quality_range)
    _in("EncodingInterval", cfg.encoding_interval, opts.encoding_interval_range)
    if not cfg.name or len(cfg.name) > 64:
        raise ConfigInvalid("configuration names are 1..64 characters")
