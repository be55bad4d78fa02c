"""Render the figures the reliability tests recorded (build/reliability.json, written by the
`record_reliability` fixture in tests/conftest.py) into the tables of docs/reliability.md,
between the `<!-- results:start -->` and `<!-- results:end -->` markers.

    python -m tests.reliability_report [build/reliability.json] [docs/reliability.md]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(title for _, title in columns) + " |"]
    out.append("|" + "---|" * len(columns))
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(key, "")) for key, _ in columns) + " |")
    return out


def render(records: list[dict[str, Any]]) -> str:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_kind.setdefault(str(rec.get("kind")), []).append(rec)
    lines = [f"Recorded {time.strftime('%Y-%m-%d')} by `make reliability`.", ""]
    if "fault" in by_kind:
        lines += ["### Faults", ""]
        lines += _table(
            by_kind.pop("fault"),
            [("name", "fault"), ("expected", "what the agent does"),
             ("recovery_s", "recovery (s)"), ("lost", "data lost")],
        )  # fmt: skip
        lines.append("")
    if "fuzz" in by_kind:
        lines += ["### Fuzzing", ""]
        lines += _table(
            by_kind.pop("fuzz"), [("name", "parser"), ("inputs", "inputs"), ("crashes", "crashes")]
        )
        lines.append("")
    for kind, rows in sorted(by_kind.items()):
        lines += [f"### {kind.capitalize()}", ""]
        keys = sorted({k for r in rows for k in r} - {"kind", "name"})
        lines += _table(rows, [("name", "check"), *((k, k) for k in keys)])
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    source = Path(argv[0] if argv else "build/reliability.json")
    target = Path(argv[1] if len(argv) > 1 else "docs/reliability.md")
    try:
        records = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        print(f"reliability_report: cannot read {source}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(records, list):
        print(f"reliability_report: {source} is not a list", file=sys.stderr)
        return 1
    text = target.read_text()
    if START not in text or END not in text:
        print(f"reliability_report: {target} has no results markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    target.write_text(f"{head}{START}\n{render(records)}\n{END}{tail}")
    print(f"wrote {len(records)} figures into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
