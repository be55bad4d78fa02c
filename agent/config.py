"""The agent's configuration: one frozen, typed object validated at start-up.

Sources, later ones winning: built-in defaults, the TOML file (`/etc/camera-agent/agent.toml` or
`--config`), environment variables (`CAMERA_AGENT_*`), command-line flags. Anything invalid stops
the agent at start with a `ConfigError` that names the setting; secrets are wrapped in `Secret`.

Example file:

    [agent]
    state_dir = "/var/lib/camera-agent"
    reboot_command = ["systemctl", "reboot"]   # the cloud's reboot reboots the box (default:
                                               # restart the agent only, exit status 3)

    [api]
    listen = "127.0.0.1:8780"     # another address needs token (or CAMERA_AGENT_API_TOKEN)
    token = "change-me"
    webrtc_addresses = ["192.168.1.10"]   # live view ICE addresses (default: the LAN ones)
    cors_origins = ["https://ha.example.net"]   # pages elsewhere allowed to POST /api/v1/webrtc

    [discovery]
    multicast = true
    interfaces = []               # IPv4 addresses to probe on; empty = the default interface
    subnets = ["192.168.1.0/24"]  # unicast WS-Discovery to every host
    probe = ["192.168.1.64:80"]   # cameras that do not answer discovery (ONVIF HTTP address)
    interval = 300                # seconds between re-probes
    mdns = true

    [cloud]
    activation_url = "https://activation.example.net"
    activation_hosts = ["example.net"]   # activation servers a QR code may name before
                                  # activation: these hosts and names under them (empty = any
                                  # https host); the activation_url is always allowed
    ca_file = "/etc/camera-agent/ca.pem"   # optional extra CA bundle
    pin_sha256 = "..."            # optional: SHA-256 (hex) of the server certificate

    [tunnel]                      # byte tunnels the cloud streamer asks for
    idle_timeout = 60             # seconds without a byte either way before a tunnel is closed
    open_burst = 8                # tunnel opens a camera may take at once ...
    open_rate = 2.0               # ... and per second after that

    [sessions]                    # RTSP sessions the agent opens to each camera
    max_sessions = 2              # per camera: one shared session per stream (main, sub) and
                                  # each cloud tunnel count; a consumer beyond is refused
    linger = 10                   # seconds a camera session stays open after its last consumer

    [[sessions.camera]]           # another limit for one camera: match its id, serial or address
    match = "192.168.1.64"
    max_sessions = 4

    [restream]                    # the agent's own RTSP server: rtsp://HOST:PORT/<camera id>/main
    listen = "0.0.0.0:8554"       # off unless set
    username = "viewer"
    password = "..."              # unset: generated once, kept in the state directory

    [health]
    interval = 10                 # seconds between health samples, also reported to the cloud
    thermal_zone = "/sys/class/thermal/thermal_zone0/temp"   # default: psutil's sensors
    throttled = "/sys/devices/platform/soc/soc:firmware/get_throttled"   # Raspberry Pi
    log_dir = "/var/log"

    [[push]]                      # publish a camera to a streamer that takes pushed streams
    camera = "<camera id>"
    url = "rtmp://streamer.example.net/live/door"   # rtsp://, rtmp://, srt:// (see docs/push.md)
    stream = "main"               # or "sub", or a profile token

    [[camera]]                    # a camera that speaks RTSP only (no ONVIF), added by URL
    name = "garage"
    rtsp_url = "rtsp://192.168.1.70:554/stream1"   # user:password@ in it is moved to the
    sub_url = "rtsp://192.168.1.70:554/stream2"    # credentials; optional
    snapshot_url = "http://192.168.1.70/snap.jpg"  # optional: else decoded from the stream
    username = "admin"
    password = "secret"

    [[credentials.default]]       # tried in order on every camera
    username = "admin"
    password = "admin"

    [[credentials.camera]]        # for one camera: match its id, serial number or address
    match = "192.168.1.64"
    username = "viewer"
    password = "secret"
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.net.urls import parse_probe
from agent.secret import Credentials, Secret

DEFAULT_CONFIG = Path("/etc/camera-agent/agent.toml")
DEFAULT_STATE_DIR = Path("/var/lib/camera-agent")
DEFAULT_API = ("127.0.0.1", 8780)
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DiscoveryConfig:
    multicast: bool = True
    interfaces: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    probe: tuple[tuple[str, int], ...] = ()
    interval: float = 300.0
    discovery_port: int = 3702
    mdns: bool = True


@dataclass(frozen=True)
class CloudConfig:
    activation_url: str | None = None
    activation_hosts: tuple[str, ...] = ()  # QR activation servers allowed; empty: any https
    ca_file: Path | None = None
    pin_sha256: str | None = None  # hex SHA-256 of the server certificate (DER)


@dataclass(frozen=True)
class TunnelConfig:
    idle_timeout: float = 60.0
    open_burst: int = 8
    open_rate: float = 2.0


@dataclass(frozen=True)
class SessionsConfig:
    max_sessions: int = 2  # RTSP sessions per camera: shared streams plus cloud tunnels
    linger: float = 10.0  # seconds a shared camera session outlives its last consumer
    per_camera: Mapping[str, int] = field(default_factory=dict)  # match -> max_sessions


@dataclass(frozen=True)
class RestreamConfig:
    host: str | None = None  # None: the restream server is off
    port: int = 8554
    username: str = "viewer"
    password: Secret | None = None  # None: generated and kept in the state directory


@dataclass(frozen=True)
class PushConfig:
    camera: str
    url: Secret  # may carry a stream key or credentials
    stream: str = "main"


@dataclass(frozen=True)
class CameraConfig:
    """A `[[camera]]` table: a camera added by its RTSP URL. URLs are kept without credentials."""

    rtsp_url: str
    name: str = ""
    sub_url: str | None = None
    snapshot_url: str | None = None
    credentials: Credentials | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UpdateConfig:
    root: Path | None = None  # install root; None: CAMERA_AGENT_ROOT from the arbiter, else off
    url: str | None = None  # update index to check; None: updates come from the cloud only
    check_interval: float = 6 * 3600.0
    auto_apply: bool = True
    hardware: str | None = None  # hardware profile bundles must target


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    api_host: str = DEFAULT_API[0]
    api_port: int = DEFAULT_API[1]
    api_token: Secret | None = None
    webrtc_addresses: tuple[str, ...] | None = None  # ICE host addresses; None = the LAN ones
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    restream: RestreamConfig = field(default_factory=RestreamConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    cors_origins: tuple[str, ...] = ()  # origins allowed to call POST /api/v1/webrtc/{id}
    push: tuple[PushConfig, ...] = ()
    cameras: tuple[CameraConfig, ...] = ()
    update: UpdateConfig = field(default_factory=UpdateConfig)
    hardware_profile: str | None = None  # force a hardware profile id; None: detect
    reboot_command: tuple[str, ...] = ()  # empty: the cloud's reboot restarts the agent only
    health_interval: float = 10.0  # seconds between health samples (also sent to the cloud)
    thermal_zone: Path | None = None  # sysfs temperature file (millidegrees); None: psutil sensors
    throttled_path: Path | None = None  # Raspberry Pi get_throttled flags (hex)
    log_dir: Path = Path("/var/log")  # its disk is reported beside the state directory's
    default_credentials: tuple[Credentials, ...] = ()
    camera_credentials: Mapping[str, Credentials] = field(default_factory=dict)
    source: str = "defaults"  # where the file part came from, for `status`


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdecimal() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return host, int(port)


def _probe(text: str) -> tuple[str, int]:
    """A `[discovery] probe` address, parsed as `--probe` is (agent.net.urls.parse_probe)."""
    try:
        return parse_probe(text)
    except ValueError as exc:
        raise ConfigError(f"discovery.probe: {exc}") from None


def check_url(url: str, what: str = "cloud.activation_url") -> str:
    """An http(s) URL with a host, without credentials; trailing slash removed."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{what} must not carry credentials")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _typed(section: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = section[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}.{key} must be of type {names}")
    return value


def _strings(section: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _typed(section, key, list, where)
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(unknown)}")


def _credentials(item: Any, where: str) -> Credentials:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} entries must be tables")
    username, password = item.get("username"), item.get("password")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        raise ConfigError(f"{where} entries need a username and a password (strings)")
    return Credentials(username, Secret(password))


def _activation_host(text: str) -> str:
    from agent.errors import ProtocolError
    from agent.proto.cloud import host_pattern

    try:
        return host_pattern(text)
    except ProtocolError as exc:
        raise ConfigError(
            f"cloud.activation_hosts: {exc} (give names like example.net, without scheme or port)"
        ) from None


def _check_subnet(cidr: str) -> str:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ConfigError(f"discovery.subnets: {exc}") from None
    return cidr


def from_mapping(data: Mapping[str, Any], *, source: str = "file") -> AgentConfig:
    """Build a config from parsed TOML; raises ConfigError naming the bad setting."""
    _check_keys(
        data,
        {"agent", "api", "discovery", "cloud", "credentials", "tunnel", "restream", "push",
         "health", "update", "hardware", "camera", "sessions"},
        "the config file",
    )  # fmt: skip
    health = _table(data, "health")
    _check_keys(health, {"interval", "thermal_zone", "throttled", "log_dir"}, "[health]")
    cfg = AgentConfig(source=source)
    agent = _table(data, "agent")
    _check_keys(agent, {"state_dir", "reboot_command"}, "[agent]")
    if "state_dir" in agent:
        cfg = replace(cfg, state_dir=Path(_typed(agent, "state_dir", str, "agent")))
    if "reboot_command" in agent:
        command = _strings(agent, "reboot_command", "agent")
        if command and not command[0].startswith("/") and "/" in command[0]:
            raise ConfigError("agent.reboot_command: give a program name or an absolute path")
        cfg = replace(cfg, reboot_command=command)
    api = _table(data, "api")
    _check_keys(api, {"listen", "token", "webrtc_addresses", "cors_origins"}, "[api]")
    if "cors_origins" in api:
        origins = _strings(api, "cors_origins", "api")
        cfg = replace(cfg, cors_origins=tuple(_origin(o) for o in origins))
    if "webrtc_addresses" in api:
        addrs = _strings(api, "webrtc_addresses", "api")
        for a in addrs:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ConfigError(f"api.webrtc_addresses: {a!r} is not an IP address") from None
        cfg = replace(cfg, webrtc_addresses=addrs)
    if "listen" in api:
        host, port = parse_host_port(_typed(api, "listen", str, "api"), "api.listen")
        cfg = replace(cfg, api_host=host, api_port=port)
    if "token" in api:
        cfg = replace(cfg, api_token=Secret(_typed(api, "token", str, "api")))
    disc = _table(data, "discovery")
    _check_keys(
        disc,
        {"multicast", "interfaces", "subnets", "probe", "interval", "discovery_port", "mdns"},
        "[discovery]",
    )
    d = cfg.discovery
    if "multicast" in disc:
        d = replace(d, multicast=_typed(disc, "multicast", bool, "discovery"))
    if "mdns" in disc:
        d = replace(d, mdns=_typed(disc, "mdns", bool, "discovery"))
    if "interfaces" in disc:
        d = replace(d, interfaces=_strings(disc, "interfaces", "discovery"))
    if "subnets" in disc:
        d = replace(
            d, subnets=tuple(_check_subnet(s) for s in _strings(disc, "subnets", "discovery"))
        )
    if "probe" in disc:
        probes = _strings(disc, "probe", "discovery")
        d = replace(d, probe=tuple(_probe(p) for p in probes))
    if "interval" in disc:
        interval = float(_typed(disc, "interval", (int, float), "discovery"))
        if not 10 <= interval <= 86400:
            raise ConfigError("discovery.interval must be within 10..86400 seconds")
        d = replace(d, interval=interval)
    if "discovery_port" in disc:
        port = _typed(disc, "discovery_port", int, "discovery")
        if not 0 < port < 65536:
            raise ConfigError("discovery.discovery_port must be within 1..65535")
        d = replace(d, discovery_port=port)
    cfg = replace(cfg, discovery=d)
    cloud = _table(data, "cloud")
    _check_keys(cloud, {"activation_url", "activation_hosts", "ca_file", "pin_sha256"}, "[cloud]")
    c = cfg.cloud
    if "activation_url" in cloud:
        c = replace(c, activation_url=check_url(_typed(cloud, "activation_url", str, "cloud")))
    if "activation_hosts" in cloud:
        hosts = _strings(cloud, "activation_hosts", "cloud")
        c = replace(c, activation_hosts=tuple(_activation_host(h) for h in hosts))
    if "ca_file" in cloud:
        c = replace(c, ca_file=Path(_typed(cloud, "ca_file", str, "cloud")))
    if "pin_sha256" in cloud:
        pin = _typed(cloud, "pin_sha256", str, "cloud").replace(":", "").lower()
        if len(pin) != 64 or any(ch not in "0123456789abcdef" for ch in pin):
            raise ConfigError("cloud.pin_sha256 must be 64 hex digits (SHA-256 of the certificate)")
        c = replace(c, pin_sha256=pin)
    cfg = replace(
        cfg,
        cloud=c,
        tunnel=_tunnel(data),
        restream=_restream(data),
        sessions=_sessions(data),
        push=_push(data),
        cameras=_cameras(data),
        update=_update(data),
    )
    if "interval" in health:
        every = float(_typed(health, "interval", (int, float), "health"))
        if not 1 <= every <= 3600:
            raise ConfigError("health.interval must be within 1..3600 seconds")
        cfg = replace(cfg, health_interval=every)
    if "thermal_zone" in health:
        cfg = replace(cfg, thermal_zone=Path(_typed(health, "thermal_zone", str, "health")))
    if "throttled" in health:
        cfg = replace(cfg, throttled_path=Path(_typed(health, "throttled", str, "health")))
    if "log_dir" in health:
        cfg = replace(cfg, log_dir=Path(_typed(health, "log_dir", str, "health")))
    hardware = _table(data, "hardware")
    _check_keys(hardware, {"profile"}, "[hardware]")
    if "profile" in hardware:
        profile = _typed(hardware, "profile", str, "hardware")
        if not 0 < len(profile) <= 64:
            raise ConfigError("hardware.profile must be a profile id (see `camera-agent hw`)")
        cfg = replace(cfg, hardware_profile=profile)
    creds = _table(data, "credentials")
    _check_keys(creds, {"default", "camera"}, "[credentials]")
    defaults = creds.get("default", [])
    cameras = creds.get("camera", [])
    if not isinstance(defaults, list) or not isinstance(cameras, list):
        raise ConfigError("credentials.default and credentials.camera must be arrays of tables")
    per_camera: dict[str, Credentials] = {}
    for item in cameras:
        match = item.get("match") if isinstance(item, Mapping) else None
        if not isinstance(match, str) or not match:
            raise ConfigError(
                "credentials.camera entries need a match (camera id, serial or address)"
            )
        per_camera[match] = _credentials(item, "credentials.camera")
    return replace(
        cfg,
        default_credentials=tuple(_credentials(i, "credentials.default") for i in defaults),
        camera_credentials=per_camera,
    )


def _update(data: Mapping[str, Any]) -> UpdateConfig:
    section = _table(data, "update")
    _check_keys(section, {"root", "url", "check_interval", "auto_apply", "hardware"}, "[update]")
    u = UpdateConfig()
    if "root" in section:
        root = _typed(section, "root", str, "update")
        if not root.startswith("/"):
            raise ConfigError("update.root must be an absolute path")
        u = replace(u, root=Path(root))
    if "url" in section:
        u = replace(u, url=check_url(_typed(section, "url", str, "update"), "update.url"))
    if "check_interval" in section:
        every = float(_typed(section, "check_interval", (int, float), "update"))
        if not 60 <= every <= 30 * 86400:
            raise ConfigError("update.check_interval must be within 60..2592000 seconds")
        u = replace(u, check_interval=every)
    if "auto_apply" in section:
        u = replace(u, auto_apply=_typed(section, "auto_apply", bool, "update"))
    if "hardware" in section:
        hw = _typed(section, "hardware", str, "update")
        if not 0 < len(hw) <= 64:
            raise ConfigError("update.hardware must be a profile name")
        u = replace(u, hardware=hw)
    return u


def _tunnel(data: Mapping[str, Any]) -> TunnelConfig:
    sec = _table(data, "tunnel")
    _check_keys(sec, {"idle_timeout", "open_burst", "open_rate"}, "[tunnel]")
    t = TunnelConfig()
    if "idle_timeout" in sec:
        idle = float(_typed(sec, "idle_timeout", (int, float), "tunnel"))
        if not 5 <= idle <= 3600:
            raise ConfigError("tunnel.idle_timeout must be within 5..3600 seconds")
        t = replace(t, idle_timeout=idle)
    if "open_burst" in sec:
        burst = _typed(sec, "open_burst", int, "tunnel")
        if not 1 <= burst <= 1000:
            raise ConfigError("tunnel.open_burst must be within 1..1000")
        t = replace(t, open_burst=burst)
    if "open_rate" in sec:
        rate = float(_typed(sec, "open_rate", (int, float), "tunnel"))
        if not 0.01 <= rate <= 1000:
            raise ConfigError("tunnel.open_rate must be within 0.01..1000 per second")
        t = replace(t, open_rate=rate)
    return t


def _restream(data: Mapping[str, Any]) -> RestreamConfig:
    sec = _table(data, "restream")
    _check_keys(sec, {"listen", "username", "password"}, "[restream]")
    r = RestreamConfig()
    if "listen" in sec:
        host, port = parse_host_port(_typed(sec, "listen", str, "restream"), "restream.listen")
        r = replace(r, host=host, port=port)
    if "username" in sec:
        user = _typed(sec, "username", str, "restream")
        if not user or ":" in user:
            raise ConfigError("restream.username must be non-empty, without ':'")
        r = replace(r, username=user)
    if "password" in sec:
        password = _typed(sec, "password", str, "restream")
        if len(password) < 8:
            raise ConfigError("restream.password must have at least 8 characters")
        r = replace(r, password=Secret(password))
    return r


def _max_sessions(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
        raise ConfigError(f"{what}.max_sessions must be an integer within 1..64")
    return value


def _sessions(data: Mapping[str, Any]) -> SessionsConfig:
    sec = _table(data, "sessions")
    _check_keys(sec, {"max_sessions", "linger", "camera"}, "[sessions]")
    s = SessionsConfig()
    if "max_sessions" in sec:
        s = replace(s, max_sessions=_max_sessions(sec["max_sessions"], "sessions"))
    if "linger" in sec:
        linger = float(_typed(sec, "linger", (int, float), "sessions"))
        if not 0 <= linger <= 3600:
            raise ConfigError("sessions.linger must be within 0..3600 seconds")
        s = replace(s, linger=linger)
    items = sec.get("camera", [])
    if not isinstance(items, list):
        raise ConfigError("sessions.camera must be an array of tables ([[sessions.camera]])")
    per_camera: dict[str, int] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError("sessions.camera entries must be tables")
        _check_keys(item, {"match", "max_sessions"}, "[[sessions.camera]]")
        match = item.get("match")
        if not isinstance(match, str) or not match:
            raise ConfigError("sessions.camera entries need a match (camera id, serial or address)")
        per_camera[match] = _max_sessions(item.get("max_sessions"), "sessions.camera")
    return replace(s, per_camera=per_camera)


def _origin(text: str) -> str:
    """A web origin (scheme://host[:port]) as browsers send it, lower-cased."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ConfigError(f"api.cors_origins: {text!r} is not an origin such as https://host:port")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _push(data: Mapping[str, Any]) -> tuple[PushConfig, ...]:
    items = data.get("push", [])
    if not isinstance(items, list):
        raise ConfigError("push must be an array of tables ([[push]])")
    out: list[PushConfig] = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError("push entries must be tables")
        _check_keys(item, {"camera", "url", "stream"}, "[[push]]")
        if "camera" not in item or "url" not in item:
            raise ConfigError("push entries need a camera and a url")
        camera = _typed(item, "camera", str, "push")
        url = _typed(item, "url", str, "push")
        stream = _typed(item, "stream", str, "push") if "stream" in item else "main"
        if not camera or not stream:
            raise ConfigError("push entries need a camera and a stream")
        if url.split("://", 1)[0].lower() not in PUSH_SCHEMES:
            raise ConfigError(f"push.url must be a URL of one of: {', '.join(PUSH_SCHEMES)}")
        out.append(PushConfig(camera, Secret(url), stream))
    return tuple(out)


CAMERA_KEYS = {"name", "rtsp_url", "sub_url", "snapshot_url", "username", "password"}
#: Push target schemes: rtsp/rtmp (and srt where its FFmpeg has libsrt) through PyAV, the rest
#: through the system ffmpeg (agent.media.push_ffmpeg), if it can write them.
PUSH_SCHEMES = ("rtsp", "rtmp", "srt", "rtsps", "rtmps", "rtmpt", "rtmpts", "rist", "udp", "tcp",
                "rtp")  # fmt: skip


def camera_entry(item: Mapping[str, Any]) -> CameraConfig:
    """A camera added by URL, from a `[[camera]]` table or an API body; InvalidArgument names the
    bad key (its text never holds a password)."""
    from agent.camera import rtsp_only
    from agent.errors import InvalidArgument

    def text(key: str) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidArgument(f"{key} must be a string")
        return value

    main, cred = rtsp_only.rtsp_url(item.get("rtsp_url"), "rtsp_url")
    sub, snap = text("sub_url"), text("snapshot_url")
    sub_cred = snap_cred = None
    if sub is not None:
        sub, sub_cred = rtsp_only.rtsp_url(sub, "sub_url")
    if snap is not None:
        snap, snap_cred = rtsp_only.snapshot_url(snap, "snapshot_url")
    username, password = text("username"), text("password")
    if password is not None and not username:
        raise InvalidArgument("a password needs a username")
    if username:
        cred = rtsp_only.login(username, password or "")
    name = (text("name") or "").strip()
    if len(name) > rtsp_only.MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise InvalidArgument(f"name must be printable, at most {rtsp_only.MAX_NAME} characters")
    return CameraConfig(main, name, sub, snap, cred or sub_cred or snap_cred)


def _cameras(data: Mapping[str, Any]) -> tuple[CameraConfig, ...]:
    from agent.errors import InvalidArgument

    items = data.get("camera", [])
    if not isinstance(items, list):
        raise ConfigError("camera must be an array of tables ([[camera]])")
    out: list[CameraConfig] = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise ConfigError("camera entries must be tables")
        _check_keys(item, CAMERA_KEYS, f"[[camera]] #{number}")
        try:
            out.append(camera_entry(item))
        except InvalidArgument as exc:
            raise ConfigError(f"[[camera]] #{number}: {exc}") from None
    return tuple(out)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Read the config file (the default one only if it exists) and the environment."""
    env = os.environ if env is None else env
    explicit = path is not None or "CAMERA_AGENT_CONFIG" in env
    file = Path(path if path is not None else env.get("CAMERA_AGENT_CONFIG", DEFAULT_CONFIG))
    if file.exists() or explicit:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config {file} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {file} is not valid TOML: {exc}") from None
        cfg = from_mapping(data, source=str(file))
    else:
        cfg = AgentConfig()
    if "CAMERA_AGENT_STATE_DIR" in env:
        cfg = replace(cfg, state_dir=Path(env["CAMERA_AGENT_STATE_DIR"]))
    if env.get("CAMERA_AGENT_ACTIVATION_URL"):
        url = check_url(env["CAMERA_AGENT_ACTIVATION_URL"], "CAMERA_AGENT_ACTIVATION_URL")
        cfg = replace(cfg, cloud=replace(cfg.cloud, activation_url=url))
    if env.get("CAMERA_AGENT_API_TOKEN"):
        cfg = replace(cfg, api_token=Secret(env["CAMERA_AGENT_API_TOKEN"]))
    if "CAMERA_AGENT_ACTIVATION_HOSTS" in env:  # comma separated; empty: any https host
        names = [h.strip() for h in env["CAMERA_AGENT_ACTIVATION_HOSTS"].split(",") if h.strip()]
        hosts = tuple(_activation_host(h) for h in names)
        cfg = replace(cfg, cloud=replace(cfg.cloud, activation_hosts=hosts))
    if env.get("CAMERA_AGENT_MAX_SESSIONS"):
        text = env["CAMERA_AGENT_MAX_SESSIONS"].strip()
        value = int(text) if text.isdecimal() else -1
        limit = _max_sessions(value, "CAMERA_AGENT_MAX_SESSIONS (sessions)")
        cfg = replace(cfg, sessions=replace(cfg.sessions, max_sessions=limit))
    if "CAMERA_AGENT_CORS_ORIGINS" in env:  # comma separated; empty: none
        names = [o.strip() for o in env["CAMERA_AGENT_CORS_ORIGINS"].split(",") if o.strip()]
        cfg = replace(cfg, cors_origins=tuple(_origin(o) for o in names))
    return cfg


def with_flags(
    cfg: AgentConfig,
    *,
    state_dir: str | None = None,
    api: tuple[str, int] | None = None,
    probe: Sequence[tuple[str, int]] = (),
    subnets: Sequence[str] = (),
    username: str | None = None,
    password: str | None = None,
    activation_url: str | None = None,
) -> AgentConfig:
    """Apply command-line flags: probes and subnets add to the file's; credentials go first."""
    if state_dir is not None:
        cfg = replace(cfg, state_dir=Path(state_dir))
    if api is not None:
        cfg = replace(cfg, api_host=api[0], api_port=api[1])
    d = cfg.discovery
    d = replace(
        d,
        probe=d.probe + tuple(p for p in probe if p not in d.probe),
        subnets=d.subnets + tuple(_check_subnet(s) for s in subnets if s not in d.subnets),
    )
    cfg = replace(cfg, discovery=d)
    if activation_url is not None:
        cfg = replace(cfg, cloud=replace(cfg.cloud, activation_url=check_url(activation_url)))
    if username is not None:
        first = Credentials(username, Secret(password or ""))
        cfg = replace(
            cfg,
            default_credentials=(first, *(c for c in cfg.default_credentials if c != first)),
        )
    return validate(cfg)


def validate(cfg: AgentConfig) -> AgentConfig:
    if not is_loopback(cfg.api_host) and not cfg.api_token:
        raise ConfigError(
            f"the local API would listen on {cfg.api_host}, which is not loopback: "
            "set api.token (or CAMERA_AGENT_API_TOKEN) so requests need a bearer token"
        )
    return cfg
