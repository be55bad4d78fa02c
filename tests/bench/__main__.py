"""Run the benchmark modules (`bench_*.py`) and write bench/report.json, bench/REPORT.md, the
README's "Measured" list and the performance table of docs/tunnel.md (tests/bench/report.py).

    python -m tests.bench                     every benchmark (`make bench`)
    python -m tests.bench tunnel startup push only these (their figures replace the old ones)
    python -m tests.bench --list
    python -m tests.bench --render            rewrite the files from bench/report.json only

Each module has `run() -> list[Figure]`. Figures compare the project's number with a baseline
measured in the same run, since shared machines are noisy. A run in which a benchmark fails
writes nothing.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from tests.bench import report
from tests.bench.common import Figure


def modules() -> list[str]:
    pkg = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(pkg)]) if m.name.startswith("bench_"))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Run the benchmarks and write bench/REPORT.md, bench/report.json, the "
        "README's figures and docs/tunnel.md's table. Benchmarks not named keep their figures.",
    )
    ap.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks to run, e.g. tunnel startup push (default: all; see --list)",
    )
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite bench/REPORT.md, the README's list and docs/tunnel.md's table "
        "from bench/report.json",
    )
    return ap


def _select(names: list[str], ap: argparse.ArgumentParser) -> list[str]:
    known = modules()
    if not names:
        return known
    wanted = []
    for name in names:
        module = name if name.startswith("bench_") else f"bench_{name}"
        if module not in known:
            short = " ".join(m.removeprefix("bench_") for m in known)
            ap.error(f"no benchmark {name!r}; there are: {short}")
        if module not in wanted:
            wanted.append(module)
    return wanted


def main(argv: list[str]) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.list:
        print(" ".join(m.removeprefix("bench_") for m in modules()))
        return 0
    if args.render:
        if args.names:
            ap.error("--render runs no benchmark: name none")
        report.write(report.load())
        print(f"wrote {report.REPORT_MD}, {report.README}, {report.TUNNEL_DOC}")
        return 0
    selected = _select(args.names, ap)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.monotonic()
    figures: list[tuple[str, Figure]] = []
    for name in selected:
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            for fig in module.run():
                print(f"   {fig.name}: {fig.value:.4g} {fig.unit} (baseline {fig.baseline})")
                figures.append((name, fig))
        except Exception:
            traceback.print_exc()
            print(f"benchmark {name} failed: nothing written", file=sys.stderr)
            return 1
    seconds = round(time.monotonic() - start, 1)
    new = [{**f.to_json(), "module": m, "run": stamp, "run_s": seconds} for m, f in figures]
    old = report.load() if report.REPORT_JSON.exists() else []
    report.write(report.merge(old, new))
    print(f"wrote {report.REPORT_MD}, {report.REPORT_JSON}, {report.README}, {report.TUNNEL_DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
