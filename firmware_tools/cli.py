"""Command line for update bundles: keygen, sign, build, verify, inspect.

Exit status: 0 success, 1 the bundle or a key was refused (reason on stderr),
2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cli import HelpFormatter
from agent.progress import ProgressBar, progress_bar, terminal
from firmware_tools import bundle
from firmware_tools import manifest as manifest_format
from firmware_tools.keys import (
    BundleError,
    RotationCert,
    TrustStore,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_rotation,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="camera-agent-fw",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every command has --help. See docs/updates.md.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        description = help_text[0].upper() + help_text[1:] + "."
        return sub.add_parser(
            name, help=help_text, description=description, formatter_class=HelpFormatter
        )

    k = command("keygen", "write DIR/private.pem (0600) and DIR/public.pem")
    k.add_argument("dir", type=Path, metavar="DIR", help="directory for the new key pair")

    s = command("sign", "certify a new public key with the old private key (key rotation)")
    s.add_argument("--key", type=Path, required=True, metavar="PEM", help="old private key")
    s.add_argument("new_key", type=Path, metavar="NEW_KEY", help="new public key (PEM)")
    s.add_argument(
        "-o", "--output", type=Path, required=True, metavar="PATH", help="*.rotation.json to write"
    )

    b = command("build", "build a signed bundle")
    b.add_argument(
        "--key", type=Path, required=True, metavar="PEM", help="private key that signs the bundle"
    )
    b.add_argument("--product", required=True, help="product name, e.g. camera-agent")
    b.add_argument("--version", required=True, help="version of the payload, e.g. 1.4.0")
    b.add_argument(
        "--release", type=int, required=True, metavar="N", help="monotonic release counter"
    )
    b.add_argument(
        "--payload", type=Path, required=True, metavar="PATH", help="file or directory to carry"
    )
    b.add_argument(
        "--hardware",
        action="append",
        default=[],
        metavar="PROFILE",
        help="target hardware profile, repeatable (none: any hardware)",
    )
    b.add_argument(
        "--min-agent-version",
        metavar="VERSION",
        help="oldest agent version that may install it (none: any)",
    )
    b.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="may be installed over a higher release (a deliberate rollback release)",
    )
    b.add_argument(
        "--expires-release",
        type=int,
        metavar="N",
        help="refused once a device has accepted a release above N (none: never)",
    )
    b.add_argument(
        "--rotation",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="*.rotation.json chaining the signing key to a trusted one, repeatable",
    )
    b.add_argument(
        "-o", "--output", type=Path, required=True, metavar="PATH", help="bundle file to write"
    )

    v = command("verify", "verify a bundle (exit 0 when valid)")
    v.add_argument(
        "--trust",
        type=Path,
        action="append",
        required=True,
        metavar="PATH",
        help="trusted public key, or a directory of them, repeatable",
    )
    v.add_argument("--product", help="refuse a bundle for another product")
    v.add_argument("--hardware", metavar="PROFILE", help="refuse a bundle not for this hardware")
    v.add_argument(
        "--min-release", type=int, default=0, metavar="N", help="refuse releases below N"
    )
    v.add_argument(
        "--counter-file",
        type=Path,
        metavar="PATH",
        help="read the accepted release counter here (refuse releases below it)",
    )
    v.add_argument(
        "--agent-version",
        metavar="VERSION",
        help="running agent version, checked against the bundle's minimum",
    )
    v.add_argument(
        "--max-size",
        type=int,
        default=bundle.DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help="refuse a larger bundle or payload",
    )
    v.add_argument(
        "--extract", type=Path, metavar="DIR", help="also unpack the payload into this new dir"
    )
    v.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle file")

    i = command("inspect", "print the manifest as JSON (not verified)")
    i.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle file")
    return p


def _load_rotation(path: Path) -> RotationCert:
    return RotationCert.from_json(
        manifest_format.parse_json(path.read_bytes()[: 64 * 1024], str(path))
    )


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A bundle progress callback drawing a bar on a terminal's stderr; None elsewhere."""
    if not terminal(sys.stderr):
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list[ProgressBar] = []

        def callback(done: int, total: int) -> None:
            if not bars:
                bars.append(stack.enter_context(progress_bar(label, total, enabled=True)))
            bars[0].update(done)

        yield callback


def _run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        print(f"key id {generate_keypair(args.dir)} written to {args.dir}")
    elif args.command == "sign":
        old = load_private_key(args.key)
        cert = sign_rotation(old, load_public_key(args.new_key))
        args.output.write_bytes(manifest_format.canonical_json(cert.to_json()) + b"\n")
        print(f"key {cert.new_keyid} certified by {cert.signer}")
    elif args.command == "build":
        key = load_private_key(args.key)
        with _progress("build") as progress:
            m = _build(args, key, progress)
        print(
            f"built {args.output}: {m.product} {m.version} release {m.release}, "
            f"{len(m.files)} file(s), {m.total_size} bytes, key {key_id(key.public_key())}"
        )
    elif args.command == "verify":
        trust = TrustStore.from_paths(args.trust)
        min_release = args.min_release
        if args.counter_file is not None:
            min_release = max(min_release, bundle.ReleaseCounter(args.counter_file).get())
        kwargs = {
            "product": args.product,
            "hardware": args.hardware,
            "min_release": min_release,
            "agent_version": args.agent_version,
            "max_size": args.max_size,
        }
        label = "extract" if args.extract is not None else "verify"
        with _progress(label) as progress:
            if args.extract is not None:
                m = bundle.extract(args.bundle, args.extract, trust, progress=progress, **kwargs)
            else:
                m = bundle.verify(args.bundle, trust, progress=progress, **kwargs)
        print(f"OK {m.product} {m.version} release {m.release}")
    else:
        manifest, sigs, rots = bundle.inspect(args.bundle)
        doc = {
            "verified": False,
            "manifest": manifest.to_json(),
            "signed_by": [s.keyid for s in sigs],
            "rotations": [{"new_key": r.new_keyid, "signer": r.signer} for r in rots],
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def _build(
    args: argparse.Namespace, key: Ed25519PrivateKey, progress: Callable[[int, int], None] | None
) -> bundle.Manifest:
    return bundle.build(
        args.output,
        args.payload,
        key=key,
        product=args.product,
        version=args.version,
        release=args.release,
        hardware=args.hardware,
        min_agent_version=args.min_agent_version,
        allow_downgrade=args.allow_downgrade,
        expires_release=args.expires_release,
        rotations=[_load_rotation(p) for p in args.rotation],
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``camera-agent-fw`` / ``python -m firmware_tools``."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:  # the reader went away (`... | head`): not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (BundleError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
