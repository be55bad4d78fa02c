"""Shared by the self-update tests: an install root that trusts a fresh key, and signed
bundles of small agent trees."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from firmware_tools import keys
from firmware_tools.bundle import build


def trusted_root(tmp: Path) -> tuple[Path, Path]:
    """(install root whose trust/ holds a fresh public key, the private key's path)."""
    keydir = tmp / "keys"
    keys.generate_keypair(keydir)
    root = tmp / "root"
    (root / "trust").mkdir(parents=True)
    shutil.copy(keydir / "public.pem", root / "trust" / "public.pem")
    return root, keydir / "private.pem"


def agent_tree(tmp: Path, tag: str, main: str = "pass\n", blob: int = 0) -> Path:
    """A payload tree `site/agent/` (`__init__`, `__main__` = `main`, `blob` random bytes)."""
    site = tmp / f"tree-{tag}" / "site" / "agent"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text(f'__version__ = "{tag}"\n')
    (site / "__main__.py").write_text(main)
    if blob:
        (site / "blob.bin").write_bytes(os.urandom(blob))
    return site.parent.parent


def sign(
    out: Path,
    payload: Path,
    key: Path,
    version: str,
    release: int,
    *,
    product: str = "camera-agent",
    hardware: tuple[str, ...] = (),
) -> Path:
    """Build the signed bundle `out` of `payload`."""
    build(
        out,
        payload,
        key=keys.load_private_key(key),
        product=product,
        version=version,
        release=release,
        hardware=hardware,
    )
    return out
