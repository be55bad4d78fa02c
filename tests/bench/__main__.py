"""Run every benchmark module (`bench_*.py`) and write bench/REPORT.md and bench/report.json.

Each module has `run() -> list[Figure]`. Figures compare the project's number with a baseline
measured in the same run, since shared machines are noisy.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from tests.bench.common import Figure

OUT = Path("bench")


def _modules() -> list[str]:
    pkg = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(pkg)]) if m.name.startswith("bench_"))


def _report(figures: list[Figure], seconds: float) -> str:
    lines = [
        "# camera-agent benchmarks",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M:%S')} in {seconds:.0f} s, "
        "with each baseline measured in the same run.",
        "",
        "| benchmark | figure | camera-agent | baseline | baseline is | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "n/a"
        base = f"{f.baseline:.4g} {f.unit}" if f.baseline is not None else "n/a"
        lines.append(
            f"| {f.bench} | {f.name} | {f.value:.4g} {f.unit} | {base} | {f.baseline_name} "
            f"| {ratio} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {f.bench} / {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    wanted = set(argv)
    figures: list[Figure] = []
    start = time.monotonic()
    for name in _modules():
        if wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"tests.bench.{name}")
        for fig in module.run():
            print(
                f"   {fig.name}: {fig.value:.4g} {fig.unit} (baseline {fig.baseline})", flush=True
            )
            figures.append(fig)
    OUT.mkdir(exist_ok=True)
    seconds = time.monotonic() - start
    (OUT / "REPORT.md").write_text(_report(figures, seconds), encoding="utf-8")
    (OUT / "report.json").write_text(
        json.dumps([f.to_json() for f in figures], indent=2), encoding="utf-8"
    )
    print(f"wrote {OUT / 'REPORT.md'} and {OUT / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
