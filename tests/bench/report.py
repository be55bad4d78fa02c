"""What `python -m tests.bench` writes from its figures: bench/report.json (every figure with the
benchmark module and the run that measured it), bench/REPORT.md, the README's "Measured" list and
the performance table of docs/tunnel.md (between `<!-- bench:start -->` and `<!-- bench:end -->`).

A run of some of the modules replaces their figures and keeps the others' from their own runs;
every rendered file is a function of bench/report.json alone, which
tests/unit/test_figures_in_sync.py checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
REPORT_JSON = Path("bench/report.json")
REPORT_MD = Path("bench/REPORT.md")
README = Path("README.md")
TUNNEL_DOC = Path("docs/tunnel.md")
#: The benchmarks shown in docs/tunnel.md.
TUNNEL_BENCHES = ("tunnel", "tunnel multiplexer")

Fig = dict[str, Any]


def load(path: Path = REPORT_JSON) -> list[Fig]:
    figures = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(figures, list):
        raise ValueError(f"{path} is not a list of figures")
    for fig in figures:
        missing = {"bench", "name", "value", "unit", "module", "run"} - set(fig)
        if missing:
            raise ValueError(f"{path}: a figure without {', '.join(sorted(missing))}")
    return figures


def merge(old: list[Fig], new: list[Fig]) -> list[Fig]:
    """`new` replaces every figure of the modules it comes from; ordered by module."""
    ran = {f["module"] for f in new}
    kept = [f for f in old if f["module"] not in ran]
    order = {m: i for i, m in enumerate(sorted({f["module"] for f in kept + new}))}
    return sorted(kept + new, key=lambda f: order[f["module"]])  # stable: run order kept


def _num(value: float) -> str:
    size = abs(value)
    if size == 0:
        return "0"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:#.2g}"


def _times(fig: Fig) -> str:
    return f"{fig['ratio']:.2f}x" if fig.get("ratio") is not None else "no ratio"


def _runs(figures: Iterable[Fig]) -> list[tuple[str, float, list[str]]]:
    """(when, seconds, benchmarks) of each run the figures come from, oldest first."""
    runs: dict[str, tuple[float, list[str]]] = {}
    for f in figures:
        _, benches = runs.setdefault(f["run"], (float(f.get("run_s", 0.0)), []))
        if f["bench"] not in benches:
            benches.append(f["bench"])
    return [(when, s, b) for when, (s, b) in sorted(runs.items())]


def render_report(figures: list[Fig]) -> str:
    """bench/REPORT.md."""
    lines = ["# camera-agent benchmarks", ""]
    lines += ["Each figure beside a baseline measured in the same run. Runs of "
              "`python -m tests.bench` these figures come from:", ""]  # fmt: skip
    lines += [f"- {when} ({s:.0f} s): {', '.join(b)}" for when, s, b in _runs(figures)]
    lines += ["", "| benchmark | figure | camera-agent | baseline | baseline is | ratio |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for f in figures:
        ratio = f"{f['ratio']:.2f}" if f.get("ratio") is not None else "n/a"
        base = f"{f['baseline']:.4g} {f['unit']}" if f.get("baseline") is not None else "n/a"
        lines.append(
            f"| {f['bench']} | {f['name']} | {f['value']:.4g} {f['unit']} | {base} "
            f"| {f.get('baseline_name', '')} | {ratio} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {f['bench']} / {f['name']}: {f['note']}" for f in figures if f.get("note")]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ README: "Measured"

Get = Callable[[str, str], Fig]


def _tunnel(get: Get) -> str:
    bulk = get("tunnel", "bulk: agent CPU per GiB, one stream")
    paced = get("tunnel", "32 x 4 Mbit/s: agent CPU share of one core")
    delay = get("tunnel", "added chunk delay p99 at 4 Mbit/s")
    text = (
        f"Tunnel, the real agent's data connection: {_num(bulk['value'])} CPU-seconds per GiB "
        f"against {_num(bulk['baseline'])} for socat forwarding the same bytes "
        f"(`{bulk['baseline_name']}`; {_times(bulk)}; target 2x)"
    )
    try:
        socat8k = get("tunnel", "bulk: socat CPU per GiB with its default 8 KiB transfers")
        text += f" (socat with its default 8 KiB transfers: {_num(socat8k['value'])})"
    except KeyError:
        pass
    text += (
        f"; 32 streams of 4 Mbit/s through one agent take {_num(paced['value'])} of a core "
        f"(socat {_num(paced['baseline'])}; target < 0.25); added delay per chunk p99 "
        f"{_num(delay['value'])} ms (socat {_num(delay['baseline'])} ms; target < 5 ms)."
    )
    try:
        tls = get("tunnel", "bulk over wss: agent CPU per GiB")
        text += f" Over `wss://` {_num(tls['value'])} CPU-s/GiB."
    except KeyError:
        pass
    return text


def _push(get: Get) -> str:
    cpu = get("push relay", "CPU per relayed stream")
    text = (
        f"Push relay: {_num(cpu['value'])} of a core per relayed 720p stream against "
        f"{_num(cpu['baseline'])} for `ffmpeg -c copy` ({_times(cpu)}; target 1.3x)"
    )
    try:
        pss = get("push relay", "PSS of the relay process (4 streams)")
        text += (
            f"; memory (PSS) {_num(pss['value'])} MiB for 4 relays in one process against "
            f"{_num(pss['baseline'])} MiB for 4 ffmpeg processes"
        )
    except KeyError:
        pass
    return text + "."


def _sessions(get: Get) -> str:
    held = get(
        "restream fan-out", "camera sessions held, restream + push + WebRTC + snapshots at once"
    )
    rtsp = [get("restream fan-out", f"agent CPU per viewer, {n}") for n in
            ("1 RTSP viewer", "4 RTSP viewers", "16 RTSP viewers")]  # fmt: skip
    rss = get("restream fan-out", "RSS with 16 RTSP viewers")
    text = (
        f"Shared camera sessions: restream, push, WebRTC and snapshots at once hold "
        f"{int(held['value'])} RTSP session(s) on the camera for {int(held['baseline'])} "
        "consumers; "
        "restream CPU per viewer with 1, 4 and 16 viewers "
        + ", ".join(_num(f["value"]) for f in rtsp)
        + " of a core against go2rtc's "
        + ", ".join(_num(f["baseline"]) for f in rtsp)
        + f"; RSS with 16 viewers {_num(rss['value'])} MiB (go2rtc {_num(rss['baseline'])} MiB)"
    )
    try:
        one = get("webrtc live view", "agent CPU per viewer, 1 WebRTC viewer")
        four = get("webrtc live view", "agent CPU per viewer, 4 WebRTC viewers")
        first = get("webrtc live view", "offer to first decoded frame, no camera session open")
        text += (
            f"; WebRTC CPU per viewer with 1 and 4 viewers {_num(one['value'])} and "
            f"{_num(four['value'])} (go2rtc {_num(one['baseline'])} and {_num(four['baseline'])}), "
            f"offer to first frame {_num(first['value'])} ms (go2rtc {_num(first['baseline'])} ms)"
        )
    except KeyError:
        pass
    try:
        push = get("push relay", "CPU per relay, 4 relays of one shared camera session (the agent)")
        text += (
            f"; 4 push relays of one camera {_num(push['value'])} of a core each against 4 "
            f"`ffmpeg -c copy` reading the camera {_num(push['baseline'])} ({_times(push)})"
        )
    except KeyError:
        pass
    try:
        enc = get("transcode", "CPU per transcoded camera (1 viewer)")
        text += (
            f"; an H.265 camera transcoded for the live view {_num(enc['value'])} of a core "
            f"(`ffmpeg -c:v libx264` doing the same {_num(enc['baseline'])})"
        )
    except KeyError:
        pass
    return text + "."


def _commands(get: Get) -> str:
    p50 = get("cloud commands", "PTZ round trip p50, cloud API -> agent -> camera")
    p99 = get("cloud commands", "PTZ round trip p99, cloud API -> agent -> camera")
    return (
        "Cloud PTZ command, Watcher API -> simulated cloud -> agent -> camera and back: p50 "
        f"{_num(p50['value'])} ms, p99 {_num(p99['value'])} ms (target p99 < 50 ms); the same "
        f"ContinuousMove sent to the camera directly: p50 {_num(p50['baseline'])} ms, p99 "
        f"{_num(p99['baseline'])} ms."
    )


def _startup(get: Get) -> str:
    t = get("start-up", "spawn to READY=1 (sd_notify)")
    rss = get("start-up", "RSS at READY=1")
    text = (
        f"Start-up to READY (sd_notify) {_num(t['value'])} s, against {_num(t['baseline'])} s "
        f"for {t['baseline_name']}; RSS at READY {_num(rss['value'])} MiB (baseline: "
        f"{_num(rss['baseline'])} MiB, {rss['baseline_name']})"
    )
    try:
        eager_t = get("start-up", "spawn to READY=1 against every subcommand imported first")
        eager_rss = get("start-up", "RSS at READY=1 against every subcommand imported first")
        text += (
            f"; with every subcommand module imported before `camera-agent run` starts: "
            f"{_num(eager_t['baseline'])} s and {_num(eager_rss['baseline'])} MiB"
        )
    except KeyError:
        pass
    return text + "."


def _activation(get: Get) -> str:
    qr = get("activation", "QR code shown to first frame at the streamer")
    return (
        f"Activation: QR code shown to a camera -> first frame at the streamer "
        f"{_num(qr['value'])} s (the same with the token typed in: {_num(qr['baseline'])} s)."
    )


def _memory(get: Get) -> str:
    m16 = get("memory", "agent RSS, 16 cameras relayed (320x180@5)")
    m64 = get("memory", "agent RSS, 64 cameras relayed (320x180@5)")
    text = (
        f"Memory: {_num(m64['baseline'])} MiB idle, {_num(m16['value'])} MiB with 16 cameras "
        f"relayed, {_num(m64['value'])} MiB with 64 "
        f"({_num((m64['value'] - m64['baseline']) / 64)} MiB per camera)"
    )
    try:
        growth = get("memory", "RSS growth over the run, 64 cameras relayed")
        text += f"; RSS growth over the run with 64 cameras: {_num(growth['value'])} MiB"
    except KeyError:
        pass
    return text + "."


def _health(get: Get) -> str:
    h = get("health", "collect() CPU at a 10 s interval, 32 cameras")
    return (
        f"Health collection with 32 cameras at a 10 s interval: {_num(h['value'])} of a core "
        "(target < 0.01)."
    )


def _discovery(get: Get) -> str:
    d = get("discovery", "full inventory of 200 cameras")
    return (
        f"Discovery and ONVIF details of 200 simulated cameras in {_num(d['value'])} s (bare "
        f"WS-Discovery probe {_num(d['baseline'])} s)."
    )


_BULLETS = (
    _tunnel,
    _push,
    _sessions,
    _commands,
    _startup,
    _activation,
    _memory,
    _health,
    _discovery,
)


def readme_block(figures: list[Fig]) -> str:
    """The README's "Measured" list: the headline figures of bench/report.json."""
    by_key = {(f["bench"], f["name"]): f for f in figures}

    def get(bench: str, name: str) -> Fig:
        return by_key[(bench, name)]

    bullets = []
    for bullet in _BULLETS:
        try:
            bullets.append(bullet(get))
        except KeyError:
            continue  # that benchmark has not run yet
    runs = "; ".join(f"{when} ({', '.join(b)})" for when, _, b in _runs(figures))
    lines = [*_wrap(f"From bench/report.json, runs: {runs}.", indent=""), ""]
    for text in bullets:
        lines += _wrap(f"- {text}", indent="  ")
    return "\n".join(lines)


def _wrap(text: str, indent: str, width: int = 99) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


# ------------------------------------------------------------------ docs/tunnel.md


def tunnel_block(figures: list[Fig]) -> str:
    """The tunnel benchmarks of bench/report.json as a table, with their notes."""
    rows = [f for f in figures if f["bench"] in TUNNEL_BENCHES]
    if not rows:
        return "No tunnel benchmark has run yet."
    runs = "; ".join(f"{when} ({s:.0f} s)" for when, s, _ in _runs(rows))
    lines = [*_wrap(f"From bench/report.json, runs: {runs}.", indent=""), ""]
    lines += ["| figure | agent | baseline | baseline is | ratio |", "|---|---|---|---|---|"]
    for f in rows:
        base = f"{_num(f['baseline'])} {f['unit']}" if f.get("baseline") is not None else "n/a"
        ratio = f"{f['ratio']:.2f}" if f.get("ratio") is not None else "n/a"
        lines.append(
            f"| {f['name']} | {_num(f['value'])} {f['unit']} | {base} "
            f"| {f.get('baseline_name', '')} | {ratio} |"
        )
    lines.append("")
    for f in rows:
        if f.get("note"):
            lines += _wrap(f"- {f['name']}: {f['note']}", indent="  ")
    return "\n".join(lines)


# ------------------------------------------------------------------ files


def replace_between(text: str, body: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def between(text: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def write(figures: list[Fig], root: Path = Path()) -> None:
    """bench/report.json, bench/REPORT.md, README.md and docs/tunnel.md from `figures`."""
    readme = (root / README).read_text(encoding="utf-8")
    tunnel = (root / TUNNEL_DOC).read_text(encoding="utf-8")
    readme = replace_between(readme, readme_block(figures))
    tunnel = replace_between(tunnel, tunnel_block(figures))
    (root / REPORT_JSON).parent.mkdir(exist_ok=True)
    (root / REPORT_JSON).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    (root / REPORT_MD).write_text(render_report(figures), encoding="utf-8")
    (root / README).write_text(readme, encoding="utf-8")
    (root / TUNNEL_DOC).write_text(tunnel, encoding="utf-8")
