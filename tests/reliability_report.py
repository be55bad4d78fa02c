"""Render the figures a passing run of the reliability tests recorded (build/reliability.json,
written by the `record_reliability` fixture in tests/conftest.py only when the whole pytest
session passed) into docs/reliability.md and README.md:

- docs/reliability.md, between `<!-- results:start -->` and `<!-- results:end -->`: one table
  per kind of figure (faults, fuzzing, security, soak);
- docs/reliability.md, between `<!-- soak:start -->` and `<!-- soak:end -->`: the last
  `make soak` (bench/soak.json);
- README.md, between `<!-- reliability:start -->` and `<!-- reliability:end -->`: the recovery
  figures, taken from the same records as the faults table.

    python -m tests.reliability_report [build/reliability.json] [docs/reliability.md] [README.md]
    python -m tests.reliability_report --soak [docs/reliability.md]    the soak paragraph only

A file that is not the record of a passing run changes nothing (exit status 1).
tests/unit/test_figures_in_sync.py checks that the README and the tables agree.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import textwrap
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"
SOAK_START, SOAK_END = "<!-- soak:start -->", "<!-- soak:end -->"
README_START, README_END = "<!-- reliability:start -->", "<!-- reliability:end -->"
SOAK_JSON = Path("bench/soak.json")

#: Columns of the faults table; every other figure of a fault goes to "also measured".
FAULT_COLUMNS = [("name", "fault"), ("expected", "what the agent does"),
                 ("recovery_s", "recovery (s)"), ("lost", "data lost")]  # fmt: skip
ALSO = "also measured"
#: The results section and the README sentence before any passing run was recorded.
NO_RUN = "No passing run has recorded figures yet: run `make reliability`."
#: Record fields that are not figures.
NOT_FIGURES = {"kind", "name", "test"}
_RECORDED = re.compile(r"^Recorded (?P<when>.+?) by a passing run", re.MULTILINE)


class NotARun(Exception):
    """The file is not the record of a passing run."""


def load(source: Path) -> dict[str, Any]:
    """The run written by tests/conftest.py: {"passed": true, "finished", "tests", "records"}."""
    try:
        run = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise NotARun(f"cannot read {source}: {exc}") from exc
    if not isinstance(run, dict) or run.get("passed") is not True:
        raise NotARun(f"{source} is not the record of a passing run")
    records = run.get("records")
    if not isinstance(records, list) or not records:
        raise NotARun(f"{source} holds no figures")
    if not all(isinstance(r, dict) and "kind" in r and "name" in r for r in records):
        raise NotARun(f"{source}: a record without kind or name")
    return run


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _also(row: dict[str, Any]) -> str:
    keys = [k for k in row if k not in NOT_FIGURES and k not in dict(FAULT_COLUMNS)]
    return "; ".join(f"{k}={_cell(row[k])}" for k in keys)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(title for _, title in columns) + " |"]
    out.append("|" + "---|" * len(columns))
    for row in rows:
        cells = [_also(row) if key == ALSO else _cell(row.get(key, "")) for key, _ in columns]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render(run: dict[str, Any]) -> str:
    """The results section: one table per kind."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for rec in run["records"]:
        by_kind.setdefault(str(rec.get("kind")), []).append(rec)
    lines = [f"Recorded {run['finished']} by a passing run of {run['tests']} tests.", ""]
    if "fault" in by_kind:
        lines += ["### Faults", ""]
        lines += _table(by_kind.pop("fault"), [*FAULT_COLUMNS, (ALSO, ALSO)])
        lines.append("")
    if "fuzz" in by_kind:
        lines += ["### Fuzzing", ""]
        lines += _table(
            by_kind.pop("fuzz"), [("name", "parser"), ("inputs", "inputs"), ("crashes", "crashes")]
        )
        lines.append("")
    for kind, rows in sorted(by_kind.items()):
        lines += [f"### {kind.capitalize()}", ""]
        keys = sorted({k for r in rows for k in r} - NOT_FIGURES)
        lines += _table(rows, [("name", "check"), *((k, k) for k in keys)])
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ README: recovery figures


def parse_fault_table(text: str) -> tuple[str, dict[str, dict[str, str]]]:
    """(when recorded, fault figures) read back from a rendered results section."""
    when = _RECORDED.search(text)
    if when is None:
        raise NotARun("no 'Recorded ... by a passing run' line in the results")
    body = text.split("### Faults", 1)[1] if "### Faults" in text else ""
    rows = body.split("\n\n", 2)[1].splitlines()[2:] if body else []
    out: dict[str, dict[str, str]] = {}
    keys = [key for key, _ in FAULT_COLUMNS]
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]
        figures = dict(zip(keys, cells, strict=False))
        name = figures.pop("name")
        for pair in filter(None, cells[len(keys)].split("; ")):
            key, _, value = pair.partition("=")
            figures[key] = value
        out[name] = figures
    return when.group("when"), out


#: README recovery clauses: fault name -> text with {field} of that fault's figures.
_README_CLAUSES: list[tuple[str, str]] = [
    ("camera reboot", "first frame {recovery_s} s after a rebooted camera is back"),
    ("cloud restart", "{recovery_s} s after the cloud restarts"),
    ("streampoint connection dropped", "{recovery_s} s after the streampoint drops the agent"),
    ("network partition (10 s blackhole)",
     "{recovery_s} s after a 10 s network partition heals (the dead link is found "
     "{detection_s} s after the cut)"),
]  # fmt: skip
_README_KILL = (
    "agent_kill_9",
    "a `kill -9` at any point loses {lost}, and the agent is back in the cloud {recovery_s} s "
    "after it starts again",
)


def readme_from_results(results: str) -> str:
    """The README's recovery sentence for a rendered results section."""
    if results.strip() == NO_RUN:
        return NO_RUN
    return readme_block(*parse_fault_table(results))


def readme_block(when: str, faults: dict[str, dict[str, str]]) -> str:
    """The README's recovery sentence from the faults table's cells."""

    def clause(name: str, text: str) -> str | None:
        figures = faults.get(name)
        if figures is None:
            return None
        try:
            return text.format(**{k: v.replace("\\|", "|") for k, v in figures.items()})
        except KeyError:
            return None

    clauses = [c for c in (clause(n, t) for n, t in _README_CLAUSES) if c]
    kill = clause(*_README_KILL)
    if not clauses and not kill:
        return f"No recovery figure was recorded by the run of {when}."
    text = f"Recovery measured by the run of {when}: " + ", ".join(clauses)
    if kill:
        text += ("; " if clauses else "") + kill
    return _fill(text + ".")


# ------------------------------------------------------------------ the last soak


def soak_block(soak: dict[str, Any]) -> str:
    """The last `make soak` (bench/soak.json) in one paragraph."""
    reboots = soak["reboots"]
    times = [float(r["recovered_s"]) for r in reboots if r["recovered_s"] is not None]
    samples = soak["samples"]

    def span(key: str) -> str:
        values = [s[key] for s in samples if s.get(key) is not None]
        return f"{min(values):g}-{max(values):g}" if values else "n/a"

    rss = [float(s["rss_mib"]) for s in samples]
    text = (
        f"Last run (`make soak`, [bench/SOAK.md](../bench/SOAK.md), {len(samples)} samples): "
        f"{len(reboots)} camera reboots, {len(times)} streams recovered"
    )
    if times:
        text += (
            f" (median {statistics.median(times):.2f} s, worst {max(times):.2f} s after the "
            "camera answered again)"
        )
    if rss:
        text += (
            f"; RSS {rss[0]:.0f} MiB at the first sample and {rss[-1]:.0f} MiB at the last, "
            f"{soak['rss_growth']:+.1%} between the first and last quarter medians"
        )
    text += (
        f"; open files {span('fds')} and asyncio tasks {span('tasks')} over the samples "
        f"(growth between the first and last quarter medians: open files "
        f"{soak['fds_growth']:+g}, tasks {soak['tasks_growth']:+g}); verdict: "
        f"{'; '.join(soak['failures']) or 'pass'}."
    )
    return _fill(text)


def _fill(text: str) -> str:
    return textwrap.fill(text, width=99, break_long_words=False, break_on_hyphens=False)


# ------------------------------------------------------------------ files


def replace_between(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise NotARun(f"no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def between(text: str, start: str, end: str) -> str:
    """What is between the markers (without the newlines the writer adds)."""
    if start not in text or end not in text:
        raise NotARun(f"no {start} ... {end} markers")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def render_soak(docs: Path) -> int:
    """Only the soak paragraph, from bench/soak.json (written by `make soak`)."""
    try:
        soak = json.loads(SOAK_JSON.read_text())
        text = replace_between(docs.read_text(), SOAK_START, SOAK_END, soak_block(soak))
    except (NotARun, OSError, ValueError, KeyError) as exc:
        print(f"reliability_report: {exc}; nothing written", file=sys.stderr)
        return 1
    docs.write_text(text)
    print(f"wrote the soak paragraph of {docs} from {SOAK_JSON}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--soak"]:
        return render_soak(Path(argv[1] if len(argv) > 1 else "docs/reliability.md"))
    source = Path(argv[0] if argv else "build/reliability.json")
    docs = Path(argv[1] if len(argv) > 1 else "docs/reliability.md")
    readme = Path(argv[2] if len(argv) > 2 else "README.md")
    try:
        run = load(source)
        results = render(run)
        sentence = readme_from_results(results)
        text = replace_between(docs.read_text(), START, END, results)
        if SOAK_JSON.exists():
            soak = json.loads(SOAK_JSON.read_text())
            text = replace_between(text, SOAK_START, SOAK_END, soak_block(soak))
        readme_text = replace_between(readme.read_text(), README_START, README_END, sentence)
    except (NotARun, OSError, ValueError, KeyError) as exc:
        print(f"reliability_report: {exc}; nothing written", file=sys.stderr)
        return 1
    docs.write_text(text)
    readme.write_text(readme_text)
    print(f"wrote {len(run['records'])} figures into {docs} and the recovery figures into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
