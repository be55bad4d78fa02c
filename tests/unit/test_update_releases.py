"""Releases side by side: install from a tree or a wheel bundle, refusals leave nothing,
atomic switch, prune, bootstrap."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from agent.update.releases import Releases
from firmware_tools import keys
from firmware_tools.bundle import BundleError
from tests.update_helpers import agent_tree, sign, trusted_root


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Releases, Path]:
    root, key = trusted_root(tmp_path)
    return Releases(root), key


def _bundle(tmp: Path, key: Path, version: str, release: int, payload: Path) -> Path:
    return sign(tmp / f"{version}-{release}-{payload.name}.bundle", payload, key, version, release)


def _tree(tmp: Path, version: str) -> Path:
    return agent_tree(tmp, version)


Extra = list[tuple[zipfile.ZipInfo | str, bytes]]


def _wheel(tmp: Path, version: str, extra: Extra | None = None) -> Path:
    out = tmp / f"camera_agent-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("agent/__init__.py", f'__version__ = "{version}"\n')
        zf.writestr("agent/__main__.py", "pass\n")
        zf.writestr(f"camera_agent-{version}.dist-info/METADATA", "Name: camera-agent\n")
        zf.writestr(f"camera_agent-{version}.data/purelib/extra_mod.py", "X = 1\n")
        for name, data in extra or []:
            zf.writestr(name, data)
    return out


def _clean(r: Releases) -> bool:
    return not [p for p in r.releases_dir.iterdir() if p.name.startswith(".")]


def test_install_tree_and_reinstall(setup: tuple[Releases, Path], tmp_path: Path) -> None:
    r, key = setup
    bundle = _bundle(tmp_path, key, "1.0.0", 1, _tree(tmp_path, "1.0.0"))
    seen: list[tuple[int, int]] = []
    name, manifest = r.install(bundle, progress=lambda d, t: seen.append((d, t)))
    assert name.startswith("1.0.0-") and len(name) == len("1.0.0-") + 12
    assert manifest.release == 1 and r.usable(name) and r.names() == [name]
    assert (r.site(name) / "agent" / "__init__.py").read_text() == '__version__ = "1.0.0"\n'
    assert r.info(name)["version"] == "1.0.0" and "installed_at" in r.info(name)
    assert seen and seen[-1][0] == seen[-1][1]
    assert r.current() is None  # install never switches
    stamp = r.info(name)["installed_at"]
    assert r.install(bundle)[0] == name and r.info(name)["installed_at"] == stamp
    assert _clean(r)


def test_install_wheel(setup: tuple[Releases, Path], tmp_path: Path) -> None:
    r, key = setup
    name, _ = r.install(_bundle(tmp_path, key, "1.1.0", 2, _wheel(tmp_path, "1.1.0")))
    site = r.site(name)
    assert (site / "agent" / "__main__.py").is_file()
    assert (site / "extra_mod.py").read_text() == "X = 1\n"  # purelib mapped into site/
    assert (site / "camera_agent-1.1.0.dist-info" / "METADATA").is_file()
    assert not list(r.releases_dir.glob(f"{name}/*.whl"))


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([("../evil.py", b"x")], "unsafe-path"),
        ([("/etc/evil.py", b"x")], "unsafe-path"),
        ([("agent/../../evil.py", b"x")], "unsafe-path"),
        ([(_link("agent/link.py"), b"/etc/passwd")], "symlink"),
        ([("camera_agent-1.1.0.data/scripts/run", b"x")], "malformed"),
        ([("big.bin", b"\0" * 3_000_000)], "oversize"),
        ([("agent/__init__.py", b"again")], "malformed"),
    ],
)
def test_wheel_refusals_leave_nothing(
    setup: tuple[Releases, Path], tmp_path: Path, extra: Extra, reason: str
) -> None:
    r, key = setup
    r.max_unpacked = 1_000_000
    bundle = _bundle(tmp_path, key, "1.1.0", 2, _wheel(tmp_path, "1.1.0", extra))
    with pytest.raises(BundleError) as err:
        r.install(bundle)
    assert err.value.reason == reason
    assert r.names() == [] and _clean(r)


def test_payload_without_agent_is_malformed(setup: tuple[Releases, Path], tmp_path: Path) -> None:
    r, key = setup
    (tmp_path / "other" / "site").mkdir(parents=True)
    (tmp_path / "other" / "site" / "x.py").write_text("pass\n")
    with pytest.raises(BundleError, match="no agent package"):
        r.install(_bundle(tmp_path, key, "1.0.0", 1, tmp_path / "other"))
    assert not list(r.releases_dir.iterdir())


def test_bad_signature_and_downgrade_leave_nothing(
    setup: tuple[Releases, Path], tmp_path: Path
) -> None:
    r, key = setup
    other = tmp_path / "other-key"
    keys.generate_keypair(other)
    with pytest.raises(BundleError) as err:
        r.install(_bundle(tmp_path, other / "private.pem", "1.0.0", 1, _tree(tmp_path, "a")))
    assert err.value.reason == "unknown-key"
    (r.root / "update").mkdir()
    r.counter().accept(5)
    with pytest.raises(BundleError) as err:
        r.install(_bundle(tmp_path, key, "1.0.0", 4, _tree(tmp_path, "b")))
    assert err.value.reason == "downgrade"
    assert r.names() == [] and _clean(r)
    shutil.rmtree(r.trust_dir)
    with pytest.raises(BundleError, match="no trusted public key"):
        r.trust()


def test_switch_is_atomic_and_prune_keeps_what_matters(
    setup: tuple[Releases, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, key = setup
    names = []
    for i in range(6):
        names.append(
            r.install(_bundle(tmp_path, key, f"1.{i}.0", i + 1, _tree(tmp_path, str(i))))[0]
        )
        os.utime(r.releases_dir / names[-1])
    assert r.names() == names
    r.switch(names[1])
    assert os.readlink(r.root / "current") == f"releases/{names[1]}"
    r.switch(names[2])
    assert os.readlink(r.root / "current") == f"releases/{names[2]}"
    assert r.current() == names[2]
    assert not list(r.root.glob("current.tmp*"))
    with pytest.raises(ValueError):
        r.switch("missing-000000000000")
    assert r.current() == names[2]
    monkeypatch.setenv("CAMERA_AGENT_RELEASE", names[0])
    removed = r.prune({names[1]}, keep_count=2)
    assert removed == [names[3]]  # 0 running, 1 kept, 2 current, 4 and 5 the newest
    assert r.names() == [names[0], names[1], names[2], names[4], names[5]]
    assert _clean(r)


def test_bootstrap_and_dangling_current(setup: tuple[Releases, Path], tmp_path: Path) -> None:
    r, key = setup
    name = r.bootstrap(_bundle(tmp_path, key, "2.0.0", 7, _tree(tmp_path, "2.0.0")))
    assert r.current() == name and r.counter().get() == 7
    (r.root / "current").unlink()
    os.symlink("releases/gone-000000000000", r.root / "current")
    assert r.current() is None
    os.replace(r.root / "current", r.root / "x")
    os.symlink("/etc", r.root / "current")
    assert r.current() is None


def test_bootstrap_local_makes_this_agent_the_first_release(tmp_path: Path) -> None:
    releases = Releases(tmp_path / "root")
    name = releases.bootstrap_local()
    assert name.endswith("-local") and releases.current() == name and releases.usable(name)
    site = releases.site(name)
    assert (site / "agent" / "update" / "arbiter.py").is_file()
    assert (site / "firmware_tools" / "bundle.py").is_file()
    assert not list(site.rglob("__pycache__"))
    assert releases.bootstrap_local() == name  # again: the same release


def test_trusted_keys_can_live_outside_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, key = trusted_root(tmp_path)
    elsewhere = tmp_path / "etc-trust"
    shutil.move(root / "trust", elsewhere)
    bundle = _bundle(tmp_path, key, "1.0.0", 1, _tree(tmp_path, "1.0.0"))
    with pytest.raises(BundleError, match="no trusted public key"):
        Releases(root).install(bundle)
    monkeypatch.setenv("CAMERA_AGENT_TRUST", str(elsewhere))
    assert Releases(root).install(bundle)[1].version == "1.0.0"
    monkeypatch.delenv("CAMERA_AGENT_TRUST")
    assert Releases(root, elsewhere).trust_dir == elsewhere


def test_an_unusable_journal_reads_as_idle_and_is_kept_aside(tmp_path: Path) -> None:
    from agent.update import journal as jr

    for bad in ("dir", b"{not json", b"[]", b"x" * (jr.MAX_JOURNAL + 1)):
        root = tmp_path / f"root-{len(list(tmp_path.iterdir()))}"
        path = jr.update_dir(root) / jr.JOURNAL_FILE
        path.parent.mkdir(parents=True)
        if bad == "dir":
            path.mkdir()
        else:
            assert isinstance(bad, bytes)
            path.write_bytes(bad)
        assert jr.load(root).state == jr.State.IDLE
        assert not path.exists()
        assert list(path.parent.glob(f"{jr.JOURNAL_FILE}.corrupt-*"))


def test_default_root_and_trust_are_the_installed_services(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.update.releases import DEFAULT_ROOT, DEFAULT_TRUST

    unit = (Path(__file__).parents[2] / "systemd" / "camera-agent.service").read_text()
    assert f"--root {DEFAULT_ROOT} --trust {DEFAULT_TRUST} " in unit
    monkeypatch.delenv("CAMERA_AGENT_TRUST", raising=False)
    assert Releases(DEFAULT_ROOT).trust_dir == DEFAULT_TRUST
    assert Releases(Path("/srv/agent")).trust_dir == Path("/srv/agent/trust")
    monkeypatch.setenv("CAMERA_AGENT_TRUST", "/etc/keys")
    assert Releases(DEFAULT_ROOT).trust_dir == Path("/etc/keys")
