"""Installed agent releases side by side under an install root, and the `current` link.

Layout (see docs/updates.md, "Self-update: releases and the arbiter")::

    ROOT/releases/<version>-<sha12>/site/       the release's code (PYTHONPATH)
    ROOT/releases/<version>-<sha12>/release.json
    ROOT/current -> releases/<name>             switched atomically
    ROOT/trust/*.pem, *.rotation.json           trusted keys
    ROOT/update/release-counter                 highest accepted release

`sha12` is the first 12 hex digits of the SHA-256 of the signed manifest bytes, so the same
bundle always installs under the same name. Everything here is blocking: async callers use
`asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from agent.errors import InvalidArgument
from agent.state import fsync_dir
from agent.update.journal import update_dir
from firmware_tools.bundle import MANIFEST_NAME, MAX_MANIFEST, ReleaseCounter, extract
from firmware_tools.keys import BundleError, TrustStore
from firmware_tools.manifest import Manifest

log = logging.getLogger(__name__)

PRODUCT = "camera-agent"
RELEASE_JSON = "release.json"
COUNTER_FILE = "release-counter"
#: Most members a wheel payload may have.
MAX_WHEEL_MEMBERS = 20_000
#: Most bytes a wheel payload may unpack to.
MAX_UNPACKED = 1024 * 1024 * 1024
_STAGING = ".install-"
_CHUNK = 64 * 1024


#: The install root and trusted keys of the installed service (systemd/camera-agent.service).
DEFAULT_ROOT = Path("/var/lib/camera-agent/install")
DEFAULT_TRUST = Path("/etc/camera-agent/trust")
TRUST_HELP = (
    f"trusted keys (default: CAMERA_AGENT_TRUST; {DEFAULT_TRUST} for the installed root; "
    "else ROOT/trust)"
)


class Releases:
    """The releases under one install root."""

    #: Unpacked size limit for wheel payloads (an attribute so tests can lower it).
    max_unpacked: int = MAX_UNPACKED

    def __init__(self, root: Path, trust_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.releases_dir = self.root / "releases"
        # Trusted keys: ROOT/trust, or a directory the agent cannot write (CAMERA_AGENT_TRUST,
        # e.g. /etc/camera-agent/trust when the install root is in the agent's state directory).
        # The installed service's root keeps its keys in /etc/camera-agent/trust (DEFAULT_TRUST).
        env_trust = os.environ.get("CAMERA_AGENT_TRUST", "")
        if env_trust.startswith("/"):
            default = Path(env_trust)
        elif self.root == DEFAULT_ROOT:
            default = DEFAULT_TRUST
        else:
            default = self.root / "trust"
        self.trust_dir = trust_dir or default
        self.downloads = update_dir(self.root) / "downloads"

    # Reading.

    def counter(self) -> ReleaseCounter:
        return ReleaseCounter(update_dir(self.root) / COUNTER_FILE)

    def trust(self) -> TrustStore:
        """The trusted keys of this root; BundleError('unknown-key') when there are none."""
        pems = [p for p in self.trust_dir.glob("*.pem") if not p.name.startswith("private")]
        if not pems:
            raise BundleError("unknown-key", f"no trusted public key (*.pem) in {self.trust_dir}")
        return TrustStore.from_paths([self.trust_dir])

    def current(self) -> str | None:
        """The release `current` points to; None when the link is missing or dangling."""
        try:
            target = os.readlink(self.root / "current")
        except OSError:
            return None
        path = PurePosixPath(target)
        if path.parent != PurePosixPath("releases") or not _valid_name(path.name):
            return None
        return path.name if (self.releases_dir / path.name).is_dir() else None

    def usable(self, name: str) -> bool:
        """Complete: release.json and site/agent/__init__.py are there."""
        if not _valid_name(name):
            return False
        base = self.releases_dir / name
        return (base / RELEASE_JSON).is_file() and (base / "site/agent/__init__.py").is_file()

    def names(self) -> list[str]:
        """Usable releases, oldest install first."""
        try:
            entries = [p.name for p in self.releases_dir.iterdir()]
        except OSError:
            return []
        found = [(self._installed_at(n), n) for n in entries if self.usable(n)]
        return [n for _, n in sorted(found)]

    def site(self, name: str) -> Path:
        return (self.releases_dir / name / "site").resolve()

    def info(self, name: str) -> dict[str, object]:
        """The release.json of `name` ({} when unreadable)."""
        try:
            with open(self.releases_dir / name / RELEASE_JSON, "rb") as fh:
                data = json.loads(fh.read(MAX_MANIFEST + 4096))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _installed_at(self, name: str) -> float:
        value = self.info(name).get("installed_at")
        if isinstance(value, int | float):
            return float(value)
        with contextlib.suppress(OSError):
            return (self.releases_dir / name).stat().st_mtime
        return 0.0

    # Changing.

    def install(
        self,
        bundle: Path,
        *,
        hardware: str | None = None,
        agent_version: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[str, Manifest]:
        """Verify and unpack `bundle` as releases/<name>; never touches `current`."""
        trust = self.trust()
        min_release = self.counter().get()
        self.releases_dir.mkdir(parents=True, exist_ok=True)
        self._clean_staging()
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=self.releases_dir))
        try:
            staging.chmod(0o755)
            payload = staging / "payload"
            manifest = extract(
                bundle,
                payload,
                trust,
                product=PRODUCT,
                hardware=hardware,
                min_release=min_release,
                agent_version=agent_version,
                progress=progress,
            )
            digest = hashlib.sha256(_manifest_bytes(bundle, manifest)).hexdigest()
            name = f"{manifest.version}-{digest[:12]}"
            if self.usable(name):
                log.info("release %s is already installed", name)
                return name, manifest
            self._layout(payload, manifest)
            info = {**manifest.to_json(), "installed_at": time.time()}
            (payload / RELEASE_JSON).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            _fsync_tree(payload)
            final = self.releases_dir / name
            if final.exists() or final.is_symlink():  # an incomplete leftover
                _remove(final)
            payload.rename(final)
            fsync_dir(self.releases_dir)
        except OSError as exc:
            raise BundleError("io", f"cannot install the release: {exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("installed release %s (release %d)", name, manifest.release)
        return name, manifest

    def _layout(self, payload: Path, manifest: Manifest) -> None:
        """Make payload/site/ hold the agent package (a wheel is unpacked)."""
        if len(manifest.files) == 1 and manifest.files[0].path.endswith(".whl"):
            wheel = payload / manifest.files[0].path
            unpack_wheel(wheel, payload / "site", max_size=self.max_unpacked)
            wheel.unlink()
        if not (payload / "site" / "agent" / "__init__.py").is_file():
            raise BundleError("malformed", "no agent package in the payload")

    def _clean_staging(self) -> None:
        """Remove staging directories left by installs that died."""
        for path in self.releases_dir.glob(f"{_STAGING}*"):
            pid = path.name[len(_STAGING) :].split("-", 1)[0]
            if pid.isdecimal() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)

    def switch(self, name: str) -> None:
        """Point `current` at releases/<name> atomically (symlink, rename, directory fsync)."""
        if not self.usable(name):
            raise InvalidArgument(f"release {name!r} is not installed completely")
        tmp = self.root / f"current.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"releases/{name}", tmp)
        try:
            os.replace(tmp, self.root / "current")
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(self.root)

    def prune(self, keep: Iterable[str], *, keep_count: int = 3) -> list[str]:
        """Remove releases older than the newest `keep_count`, except those in `keep`, the
        current one and the running one (CAMERA_AGENT_RELEASE). Returns the removed names."""
        protected = {*keep, self.current(), os.environ.get("CAMERA_AGENT_RELEASE")}
        names = self.names()
        old = names[: max(len(names) - keep_count, 0)]
        removed = []
        for name in old:
            if name in protected:
                continue
            try:
                _remove(self.releases_dir / name)
            except OSError as exc:
                log.warning("cannot remove release %s: %s", name, exc.strerror or exc)
                continue
            removed.append(name)
        if removed:
            log.info("removed old releases: %s", ", ".join(removed))
        return removed

    def bootstrap_local(self) -> str:
        """Make the agent installed beside this code (the base install's own packages) the
        first release, `<version>-local`, and point current at it. For a fresh install: the
        installer trusts the code it installs; every later release must be signed."""
        from agent import __version__

        name = f"{__version__}-local"
        if self.usable(name):
            self.switch(name)
            return name
        self.releases_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=self.releases_dir))
        try:
            staging.chmod(0o755)
            site = staging / "site"
            site.mkdir()
            for package in ("agent", "firmware_tools", "hw_profiles"):
                source = Path(importlib.import_module(package).__file__ or "").parent
                shutil.copytree(
                    source, site / package, ignore=shutil.ignore_patterns("__pycache__")
                )
            dist = importlib.metadata.distribution("camera-agent")
            info = {"product": PRODUCT, "version": __version__, "release": 0, "source": "local"}
            meta = site / f"camera_agent-{__version__}.dist-info"
            meta.mkdir()
            (meta / "METADATA").write_text(dist.read_text("METADATA") or "")
            (staging / RELEASE_JSON).write_text(json.dumps({**info, "installed_at": time.time()}))
            _fsync_tree(staging)
            final = self.releases_dir / name
            if final.exists():
                _remove(final)
            staging.rename(final)
            fsync_dir(self.releases_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.switch(name)
        update_dir(self.root).mkdir(mode=0o700, parents=True, exist_ok=True)
        return name

    def bootstrap(self, bundle: Path, *, hardware: str | None = None) -> str:
        """Install `bundle`, make it current and accept its release counter."""
        name, manifest = self.install(bundle, hardware=hardware)
        self.switch(name)
        update_dir(self.root).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.counter().accept(manifest.release)
        return name


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".") and len(name) <= 255


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    """Rename aside first so a half-removed release never looks complete."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    aside = path.with_name(f"{_STAGING}{os.getpid()}-remove-{path.name}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _manifest_bytes(bundle: Path, manifest: Manifest) -> bytes:
    """The signed manifest bytes of an already verified bundle (checked to be the same)."""
    try:
        with tarfile.open(bundle, "r:") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST_NAME or member.size > MAX_MANIFEST:
                raise BundleError("malformed", "bundle does not start with its manifest")
            fh = tar.extractfile(member)
            data = fh.read(member.size) if fh is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise BundleError("io", f"cannot read {bundle}: {exc}") from exc
    if Manifest.from_bytes(data) != manifest:
        raise BundleError("malformed", "the bundle changed while it was installed")
    return data


def _fsync_tree(top: Path) -> None:
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _wheel_target(name: str) -> str | None:
    """The site-relative path of a wheel member (None: a directory entry); BundleError if
    it is unsafe or not pure Python."""
    if "\\" in name or "\x00" in name or name.startswith("/") or ":" in name.split("/")[0]:
        raise BundleError("unsafe-path", f"wheel member {name!r} is not a relative path")
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise BundleError("unsafe-path", f"wheel member {name!r} is not a plain relative path")
    if parts[0].endswith(".data"):
        if len(parts) < 2 or parts[1] != "purelib":
            raise BundleError("malformed", f"wheel member {name!r}: only purelib data is allowed")
        parts = parts[2:]
        if not parts:
            return None
    return None if name.endswith("/") else "/".join(parts)


def unpack_wheel(wheel: Path, site: Path, *, max_size: int = MAX_UNPACKED) -> None:
    """Unpack a pure-Python wheel into `site` (refuses links, unsafe paths, platform data,
    more than MAX_WHEEL_MEMBERS members and more than `max_size` bytes)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = zf.infolist()
            if len(members) > MAX_WHEEL_MEMBERS:
                raise BundleError("oversize", f"wheel has more than {MAX_WHEEL_MEMBERS} members")
            if sum(m.file_size for m in members) > max_size:
                raise BundleError("oversize", f"wheel unpacks to more than {max_size} bytes")
            site.mkdir(parents=True, exist_ok=True)
            written = 0
            for member in members:
                mode = member.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise BundleError("symlink", f"wheel member {member.filename!r} is a link")
                rel = _wheel_target(member.filename)
                if rel is None or member.is_dir():
                    continue
                target = site.joinpath(*rel.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                perm = 0o755 if mode & stat.S_IXUSR else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                try:
                    out = os.fdopen(os.open(target, flags, perm), "wb")
                except FileExistsError:
                    raise BundleError("malformed", f"wheel lists {rel} twice") from None
                with out, zf.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_size:
                            raise BundleError("oversize", f"wheel unpacks to over {max_size} B")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise BundleError("malformed", f"the payload is not a valid wheel: {exc}") from exc


__all__ = ["MAX_UNPACKED", "MAX_WHEEL_MEMBERS", "PRODUCT", "Releases", "unpack_wheel"]
