"""onvif_simple_server (roleoroleo, GPL-3.0) as a peer of the hardware-in-the-loop tests.

The ONVIF daemon of real consumer cameras, built at test time from the tarball kept in
`../shared/peers/` (never copied into the project) and served like on a camera: lighttpd's
mod_cgi on 127.0.0.1 runs one binary under each service name (`device_service`,
`media_service`, `ptz_service`...).

- Build: the tarball is extracted into `build/peers/<instance>/src` and built with its own
  Makefile, once per instance (kept while the binaries exist). Its fixed paths (configuration,
  log, debug switch, WS-Discovery templates) are rewritten in that extracted copy to point
  inside `build/peers/<instance>/`.
- Safety: its SystemReboot calls reboot(2). lighttpd and the CGI run as an unprivileged user
  (`nobody` when the tests run as root), never as root, so the call fails and nothing happens.
- Network namespace: given `netns` and `host`, lighttpd runs inside that namespace (one the test
  created), bound to `host`, still as the unprivileged user (`setpriv` after `ip netns exec`).
- WS-Discovery: `start_wsd()` runs the tarball's `wsd_simple_server` next to it (same user, same
  namespace) with the device address as its XAddrs template; it sends Hello at start, answers
  Probes and sends Bye when stopped (SIGTERM). Its device UUID is derived from the interface's
  MAC address and written to its log (`wsd_uuid()`).
- State: its PTZ moves, presets and home position are shell commands of its configuration; here
  they run `ptz.sh`, which keeps the camera's position, presets, home and a log of every command
  in files of `build/peers/<instance>/state/`, read back by the tests (`position()`,
  `presets()`, `home()`, `commands()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TARBALL = ROOT.parent / "shared" / "peers" / "onvif_simple_server-c0d58e8.tar.gz"
PEERS_DIR = ROOT / "build" / "peers"

#: Debian packages the build and the web server need: (package, a file or command it installs).
PACKAGES = (
    ("gcc", "gcc"),
    ("make", "make"),
    ("libtomcrypt-dev", "/usr/include/tomcrypt.h"),
    ("libjson-c-dev", "/usr/include/json-c/json.h"),
    ("zlib1g-dev", "/usr/include/zlib.h"),
    ("lighttpd", "lighttpd"),
)
#: The services one binary answers, each a CGI link of the same name.
SERVICES = (
    "device_service",
    "media_service",
    "media2_service",
    "ptz_service",
    "events_service",
    "deviceio_service",
)
#: The user the web server and the CGI run as when the tests run as root.
PEER_USER = "nobody"
#: Seconds allowed for apt-get, for the build, and for lighttpd to accept connections.
APT_TIMEOUT = 600.0
BUILD_TIMEOUT = 300.0
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: The camera's position when the peer starts: pan, tilt, zoom in its own units.
START_POSITION = (180.0, 90.0, 0.0)

#: The PTZ hardware of the peer: one shell script, state kept in files of its first argument.
PTZ_SCRIPT = r"""#!/bin/sh
# ptz.sh STATE_DIR ACTION [ARGS]: the motor and preset store of a camera running
# onvif_simple_server; every call is logged in STATE_DIR/commands.
d="$1"; action="$2"; shift 2
echo "$action $*" >> "$d/commands"
case "$action" in
  get_position) cat "$d/position" ;;
  is_moving) echo 0 ;;
  move|stop) ;;
  abs) echo "$1" > "$d/position" ;;
  rel) awk -F, -v rel="$1" 'BEGIN { split(rel, r, ",") }
         { printf "%f,%f,%f\n", $1 + r[1], $2 + r[2], $3 + r[3] }' "$d/position" > "$d/position.new"
       mv "$d/position.new" "$d/position" ;;
  set_home) cp "$d/position" "$d/home" ;;
  home) cp "$d/home" "$d/position" ;;
  set_preset) grep -v "^$1=" "$d/presets" > "$d/presets.new"
              echo "$1=$2,$(cat "$d/position")" >> "$d/presets.new"
              mv "$d/presets.new" "$d/presets" ;;
  remove_preset) grep -v "^$1=" "$d/presets" > "$d/presets.new"; mv "$d/presets.new" "$d/presets" ;;
  goto_preset) line=$(grep "^$1=" "$d/presets") && echo "${line#*,}" > "$d/position" ;;
  get_presets) cat "$d/presets" ;;
esac
"""


class PeerUnavailable(Exception):
    """The peer cannot be built here (packages missing and no root to install them)."""


@dataclass(frozen=True)
class StreamProfile:
    name: str
    width: int
    height: int
    rtsp_url: str  # `%s` becomes the address the server is reached on
    snapshot_url: str
    #: Its `type`: H264 or H265. Media 1 cannot say H.265: the server calls such a profile H264
    #: there and H265 only in Media2.
    encoding: str = "H264"


@dataclass(frozen=True)
class PeerConfig:
    """What the peer's configuration file says about the camera. The server answers for two
    profiles at most (tokens `Profile_0` and `Profile_1`, the names its Media2 service uses)."""

    username: str
    password: str = field(repr=False)
    profiles: tuple[StreamProfile, ...]
    manufacturer: str = "Yi"
    model: str = "Y-Hack Dome"
    firmware_version: str = "0.4.9"
    serial_number: str = "OSS0001"
    hardware_id: str = "HW-OSS-1"
    #: PTZ ranges in the camera's own units (degrees), as on the cameras it runs on.
    max_x: float = 360.0
    max_y: float = 180.0
    #: `adv_fault_if_unknown` and `adv_fault_if_set`: faults instead of empty successes.
    strict: bool = False
    #: The interface whose address it advertises; without it, it picks one by itself (on a
    #: machine with several, often not the one it was reached on).
    interface: str = "lo"
    #: `adv_enable_media2`: the Media2 service is announced and answers.
    media2: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.profiles) <= 2:
            raise ValueError("onvif_simple_server answers for one or two profiles")


def missing_packages() -> list[str]:
    missing = []
    for package, probe in PACKAGES:
        found = Path(probe).exists() if probe.startswith("/") else shutil.which(probe)
        if not found:
            missing.append(package)
    return missing


def ensure_packages() -> None:
    """Install what is missing when root (as `make test` does); otherwise say what is missing."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise PeerUnavailable(f"onvif_simple_server needs Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=APT_TIMEOUT, check=False)
        if done.returncode != 0:
            raise PeerUnavailable(f"{' '.join(cmd)} failed: {done.stderr.decode()[-300:]}")
    if still := missing_packages():
        raise PeerUnavailable(f"packages still missing after apt-get: {' '.join(still)}")


def _define(source: Path, name: str, value: Path) -> None:
    text = source.read_text()
    new, count = re.subn(rf'(#define {name}) "[^"]*"', rf'\1 "{value}"', text)
    if count != 1:
        raise RuntimeError(f"{source.name}: no single #define {name} to rewrite")
    source.write_text(new)


def build(instance: Path) -> Path:
    """The source folder of this instance, built (cached while its binaries exist)."""
    src = instance / "src"
    if (src / "onvif_simple_server").exists() and (src / "wsd_simple_server").exists():
        return src
    if not TARBALL.exists():
        raise PeerUnavailable(f"{TARBALL} is missing")
    ensure_packages()
    work = instance / "src.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with tarfile.open(TARBALL) as tar:
        tar.extractall(work, filter="data")
    for name, value in (
        ("DEFAULT_CONF_FILE", instance / "onvif_simple_server.conf"),
        ("DEFAULT_LOG_FILE", instance / "log" / "onvif_simple_server.log"),
        ("DEBUG_FILE", instance / "onvif_simple_server.debug"),
    ):
        _define(work / "onvif_simple_server.c", name, value)
    _define(work / "wsd_simple_server.c", "DEFAULT_LOG_FILE", instance / "log" / "wsd.log")
    _define(work / "wsd_simple_server.c", "DEFAULT_TEMPLATE_DIR", src / "wsd_files")
    done = subprocess.run(
        ["make", "-j2", "onvif_simple_server", "wsd_simple_server"],
        cwd=work,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"onvif_simple_server build failed:\n{done.stderr.decode()[-2000:]}")
    shutil.rmtree(src, ignore_errors=True)
    work.rename(src)
    return src


def peer_user() -> tuple[int, int] | None:
    """(uid, gid) to run the peer as; None when the tests already run unprivileged."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(PEER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PEER_USER],
            check=True,
            timeout=30,
        )
        pw = pwd.getpwnam(PEER_USER)
    return pw.pw_uid, pw.pw_gid


def process_uid(pid: int) -> int:
    """The real uid of a running process (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Uid line for process {pid}")


async def _terminate(proc: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; nothing when it is not running."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()


class OnvifSimpleServer:
    """One running instance. `async with OnvifSimpleServer("default", config) as peer: ...`"""

    def __init__(
        self,
        instance: str,
        config: PeerConfig,
        *,
        netns: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config
        self.dir = PEERS_DIR / instance
        self.state = self.dir / "state"
        self.www = self.dir / "www"
        self.netns = netns
        self.host = host
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None
        self._wsd: asyncio.subprocess.Process | None = None
        self.wsd_xaddr = ""  # the XAddrs template wsd_simple_server was given

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> OnvifSimpleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _command(self, *argv: str) -> tuple[list[str], dict[str, Any]]:
        """argv and subprocess options running `argv` as the peer's user, in its namespace."""
        user = peer_user()
        if self.netns is None:
            options: dict[str, Any] = (
                {} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}
            )
            return list(argv), options
        # `ip netns exec` needs root: the user is dropped after it, by setpriv.
        drop = (
            []
            if user is None
            else ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups"]
        )
        return ["ip", "netns", "exec", self.netns, *drop, *argv], {}

    async def start(self) -> None:
        src = await asyncio.to_thread(build, self.dir)
        if not self.port:
            self.port = free_port()
        await asyncio.to_thread(self._lay_out, src)
        argv, options = self._command("lighttpd", "-D", "-f", str(self.dir / "lighttpd.conf"))
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            **options,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._listening():
            if self._proc.returncode is not None or time.monotonic() > deadline:
                path = self.dir / "log" / "lighttpd.log"
                log = path.read_text(errors="replace") if path.exists() else ""
                await self.stop()
                raise RuntimeError(f"lighttpd did not start on port {self.port}: {log[-500:]}")
            await asyncio.sleep(0.05)

    async def _listening(self) -> bool:
        """Whether lighttpd accepts connections on (host, port)."""
        if self.netns is None:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                await writer.wait_closed()
                return True
            return False
        # Another namespace: its listening sockets, as the process itself sees them.
        assert self._proc is not None
        packed = ipaddress.IPv4Address(self.host).packed
        wanted = f"{packed[::-1].hex().upper()}:{self.port:04X}"
        try:
            table = await asyncio.to_thread(Path(f"/proc/{self._proc.pid}/net/tcp").read_text)
        except OSError:
            return False
        return any(
            line.split()[1] == wanted and line.split()[3] == "0A"  # 0A: LISTEN
            for line in table.splitlines()[1:]
        )

    async def stop(self) -> None:
        await self.stop_wsd()
        proc, self._proc = self._proc, None
        await _terminate(proc)

    # ---- WS-Discovery ------------------------------------------------------------------------

    async def start_wsd(self, interface: str) -> None:
        """Run wsd_simple_server on `interface` (its Hello goes out at once)."""
        src = await asyncio.to_thread(build, self.dir)
        log = self.dir / "log" / "wsd.log"
        with contextlib.suppress(FileNotFoundError):
            log.unlink()
        self.wsd_xaddr = f"http://%s:{self.port}/onvif/device_service"
        argv, options = self._command(
            str(src / "wsd_simple_server"),
            "--if_name", interface,
            "--xaddr", self.wsd_xaddr,
            "--model", self.config.model,
            "--hardware", self.config.manufacturer,
            "--pid_file", str(self.dir / "log" / "wsd.pid"),
            "--template_dir", str(src / "wsd_files"),
            "--foreground",
            "--debug", "3",
        )  # fmt: skip
        self._wsd = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            **options,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while "Starting main loop" not in self.wsd_log():
            if self._wsd.returncode is not None or time.monotonic() > deadline:
                text = self.wsd_log()
                await self.stop_wsd()
                raise RuntimeError(f"wsd_simple_server did not start: {text[-500:]}")
            await asyncio.sleep(0.05)

    async def stop_wsd(self) -> None:
        """SIGTERM: it sends its Bye, then exits."""
        proc, self._wsd = self._wsd, None
        await _terminate(proc)

    def wsd_log(self) -> str:
        path = self.dir / "log" / "wsd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wsd_uuid(self) -> str:
        """The device UUID wsd_simple_server announces, as its own log states it."""
        found = re.search(r"Device UUID \(([^)]*)\): ([0-9a-f-]{36})", self.wsd_log())
        if found is None:
            raise RuntimeError("wsd_simple_server logged no device UUID")
        return found.group(2)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def device_url(self) -> str:
        return f"http://{self.host}:{self.port}/onvif/device_service"

    # ---- files -------------------------------------------------------------------------------

    def _lay_out(self, src: Path) -> None:
        shutil.rmtree(self.www, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.dir / "log", ignore_errors=True)
        onvif = self.www / "onvif"
        onvif.mkdir(parents=True)
        shutil.copy2(src / "onvif_simple_server", onvif / "onvif_simple_server")
        for service in SERVICES:
            (onvif / service).symlink_to("onvif_simple_server")
        for files in src.glob("*_files"):
            shutil.copytree(files, onvif / files.name)
        self.state.mkdir()
        (self.dir / "log").mkdir()
        x, y, z = START_POSITION
        for name, text in (
            ("position", f"{x:f},{y:f},{z:f}\n"),
            ("home", f"{x:f},{y:f},{z:f}\n"),
            ("presets", ""),
            ("commands", ""),
        ):
            (self.state / name).write_text(text)
        script = self.dir / "ptz.sh"
        script.write_text(PTZ_SCRIPT)
        script.chmod(0o755)
        (self.dir / "onvif_simple_server.conf").write_text(self._conf(script))
        (self.dir / "lighttpd.conf").write_text(self._lighttpd_conf())
        user = peer_user()
        if user is not None:
            for path in (self.state, self.dir / "log", *self.state.iterdir()):
                os.chown(path, *user)

    def _conf(self, script: Path) -> str:
        c = self.config
        ptz = f"/bin/sh {script} {self.state}"
        lines = [
            f"model={c.model}",
            f"manufacturer={c.manufacturer}",
            f"firmware_ver={c.firmware_version}",
            f"hardware_id={c.hardware_id}",
            f"serial_num={c.serial_number}",
            f"ifs={c.interface}",
            f"port={self.port}",
            "scope=onvif://www.onvif.org/Profile/Streaming",
            "scope=onvif://www.onvif.org/Profile/T",
            f"scope=onvif://www.onvif.org/hardware/{c.model.replace(' ', '_')}",
            "scope=onvif://www.onvif.org/name/OssPeer",
            f"user={c.username}",
            f"password={c.password}",
            f"adv_enable_media2={int(c.media2)}",
            f"adv_fault_if_unknown={int(c.strict)}",
            f"adv_fault_if_set={int(c.strict)}",
            "adv_synology_nvr=0",
        ]
        for p in c.profiles:
            lines += [
                f"name={p.name}",
                f"width={p.width}",
                f"height={p.height}",
                f"url={p.rtsp_url}",
                f"snapurl={p.snapshot_url}",
                f"type={p.encoding}",
                "audio_encoder=NONE",
                "audio_decoder=NONE",
            ]
        lines += [
            "ptz=1",
            "min_step_x=0",
            f"max_step_x={c.max_x:g}",
            "min_step_y=0",
            f"max_step_y={c.max_y:g}",
            "min_step_z=0",
            "max_step_z=0",
            f"get_position={ptz} get_position",
            f"is_moving={ptz} is_moving",
            *(f"move_{d}={ptz} move {d} %f" for d in ("left", "right", "up", "down", "in", "out")),
            f"move_stop={ptz} stop %s",
            f"move_preset={ptz} goto_preset %d",
            f"goto_home_position={ptz} home",
            f"set_preset={ptz} set_preset %d %s",
            f"set_home_position={ptz} set_home",
            f"remove_preset={ptz} remove_preset %d",
            f"jump_to_abs={ptz} abs %f,%f,%f",
            f"jump_to_rel={ptz} rel %f,%f,%f",
            f"get_presets={ptz} get_presets",
            "events=0",
        ]
        return "\n".join(lines) + "\n"

    def _lighttpd_conf(self) -> str:
        return "\n".join(
            [
                f'server.document-root = "{self.www}"',
                f'server.bind = "{self.host}"',
                f"server.port = {self.port}",
                f'server.errorlog = "{self.dir / "log" / "lighttpd.log"}"',
                'server.modules = ( "mod_cgi" )',
                'cgi.assign = ( "_service" => "" )',
                "",
            ]
        )

    # ---- the camera's own state --------------------------------------------------------------

    def position(self) -> tuple[float, float, float]:
        x, y, z = (self.state / "position").read_text().strip().split(",")
        return float(x), float(y), float(z)

    def home(self) -> tuple[float, float, float]:
        x, y, z = (self.state / "home").read_text().strip().split(",")
        return float(x), float(y), float(z)

    def presets(self) -> dict[str, tuple[int, tuple[float, float, float]]]:
        """Preset name -> (number, position) as the camera stores them."""
        out = {}
        for line in (self.state / "presets").read_text().splitlines():
            number, rest = line.split("=", 1)
            name, x, y, z = rest.split(",")
            out[name] = (int(number), (float(x), float(y), float(z)))
        return out

    def commands(self) -> list[str]:
        """Every PTZ command the server ran, oldest first (`rel 7.200000,0.000000,0.000000`)."""
        return (self.state / "commands").read_text().splitlines()

    def log(self) -> str:
        path = self.dir / "log" / "onvif_simple_server.log"
        return path.read_text(errors="replace") if path.exists() else ""
