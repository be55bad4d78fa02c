"""The expected camera compatibility matrix and its Markdown rendering.

`EXPECTED[persona][capability]` is what the agent achieves with each vendor persona of the
simulated camera; `tests/hil/test_compat.py` exercises every cell through the agent's own code
and fails when the outcome differs. The `onvif_simple_server` column names, per cell, the test
of `tests/hil/test_peer_onvif_simple_server.py` behind it; `tests/unit/test_compat_doc.py`
checks that `docs/cameras.md` holds exactly `render()` and that those tests exist.

`python -m tests.compat` rewrites the table in `docs/cameras.md`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from agent.camera.session import REQUEST_TIMEOUT
from agent.sim.camera.persona import (
    AXIS_CLOCK_SKEW,
    NONAME_CLOCK_SKEW,
    PERSONAS,
    SLOW_PRESET_SECONDS,
    UNIVIEW_CLOCK_SKEW,
    render_markdown,
)

SUPPORTED = "supported"
WORKED_AROUND = "worked around"
NOT_SUPPORTED = "not supported"
OUTCOMES = (SUPPORTED, WORKED_AROUND, NOT_SUPPORTED)

#: Capability key and its row label, in table order.
CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("discovery", "Discovery (WS-Discovery + details)"),
    ("identity", "Identity (device information)"),
    ("profiles", "Media profiles"),
    ("h265", "H.265"),
    ("snapshot", "Snapshot"),
    ("ptz_continuous", "PTZ continuous move"),
    ("ptz_relative", "PTZ relative (step) move"),
    ("ptz_absolute", "PTZ absolute move"),
    ("presets", "PTZ presets"),
    ("home", "PTZ home"),
    ("imaging", "Imaging settings"),
    ("encoder", "Encoder settings"),
    ("users", "Users (password change)"),
    ("network", "Network ports (read)"),
    ("reboot", "Reboot"),
    ("events", "Events"),
)
CAPABILITY_KEYS = tuple(key for key, _label in CAPABILITIES)

PEER = "onvif_simple_server"
PEER_TEST_FILE = "tests/hil/test_peer_onvif_simple_server.py"
DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC = DOCS / "cameras.md"
BEGIN = "<!-- compat:begin -->"
END = "<!-- compat:end -->"
#: The persona list of docs/simulator.md, written from agent/sim/camera/persona.py.
SIM_DOC = DOCS / "simulator.md"
PERSONAS_BEGIN = "<!-- personas:begin -->"
PERSONAS_END = "<!-- personas:end -->"


@dataclass(frozen=True)
class Cell:
    """One cell: the outcome, what the agent does about it (for worked-around and unsupported
    cells), the persona's `Faults` switch it works around, or the peer test behind it."""

    outcome: str
    note: str = ""
    quirk: str = ""
    test: str = ""


_S = Cell(SUPPORTED)

#: Cells every persona shares unless it says otherwise.
_NO_EVENTS = Cell(
    NOT_SUPPORTED,
    "the agent subscribes to no ONVIF events; asking for the event service is a 400",
)
_NO_PTZ = Cell(NOT_SUPPORTED, "no PTZ service: 400 `onvif_unsupported_action`")
_NO_IMAGING = Cell(NOT_SUPPORTED, "no Imaging service: 400 `onvif_unsupported_action`")
_NO_H265 = Cell(
    NOT_SUPPORTED,
    "no H.265 profile (Media 1 only): asking for H.265 is a 400 `onvif_invalid_argument`",
)
_NO_SNAPSHOT = Cell(
    WORKED_AROUND,
    "no GetSnapshotUri: the agent grabs a frame of the smallest stream",
    quirk="soap_faults",
)
_PTZ_NONE = {
    "ptz_continuous": _NO_PTZ,
    "ptz_relative": _NO_PTZ,
    "presets": _NO_PTZ,
    "home": _NO_PTZ,
}


def _row(**cells: Cell) -> dict[str, Cell]:
    out = dict.fromkeys(CAPABILITY_KEYS, _S)
    out["events"] = _NO_EVENTS
    out.update(cells)
    return out


EXPECTED: dict[str, dict[str, Cell]] = {
    "amcrest": _row(
        h265=_NO_H265,
        encoder=Cell(
            NOT_SUPPORTED,
            "SetVideoEncoderConfiguration is acknowledged and ignored: the agent reads it back "
            "and answers 409 `onvif_not_applied`",
        ),
    ),
    "axis": _row(
        h265=_NO_H265,
        identity=Cell(
            WORKED_AROUND,
            f"camera clock {AXIS_CLOCK_SKEW / 60:g} min off: the agent signs WS-Security with "
            "the camera's clock",
            quirk="clock_skew",
        ),
        ptz_relative=Cell(
            WORKED_AROUND, "degree spaces: steps computed in the camera's range", "ptz_degrees"
        ),
        ptz_absolute=Cell(
            WORKED_AROUND, "positions taken and checked in the camera's degree range", "ptz_degrees"
        ),
        presets=Cell(WORKED_AROUND, "positions in degrees, presets by name", "ptz_degrees"),
        home=Cell(WORKED_AROUND, "home checked against the position in degrees", "ptz_degrees"),
    ),
    "dahua": _row(**_PTZ_NONE, ptz_absolute=_NO_PTZ),
    "hanwha": _row(
        profiles=Cell(
            WORKED_AROUND, "Media2 only: profiles read through Media2", quirk="services_off"
        ),
        snapshot=Cell(WORKED_AROUND, "snapshot URI from Media2", quirk="services_off"),
        encoder=Cell(WORKED_AROUND, "encoder set through Media2", quirk="services_off"),
    ),
    "hikvision": _row(
        h265=_NO_H265,
        presets=Cell(
            WORKED_AROUND,
            f"SetPreset answers after {SLOW_PRESET_SECONDS:g} s: within the agent's "
            f"{REQUEST_TIMEOUT:g} s request timeout",
            quirk="op_latency",
        ),
    ),
    "lorex": _row(
        h265=_NO_H265,
        presets=Cell(
            WORKED_AROUND,
            "SetPreset refused while moving (MovingPTZ): the agent stops, waits and retries once",
            quirk="preset_refused_while_moving",
        ),
    ),
    "noname": _row(
        h265=_NO_H265,
        identity=Cell(
            WORKED_AROUND,
            f"clock {-NONAME_CLOCK_SKEW / 86400:g} days behind: the agent signs with the "
            "camera's clock; announced service addresses that do not answer are replaced by "
            "the one that does",
            quirk="clock_skew",
        ),
        profiles=Cell(
            WORKED_AROUND,
            "stream URIs on an address that does not answer: the agent uses the camera's",
            quirk="advertised_address",
        ),
        snapshot=Cell(
            WORKED_AROUND,
            "snapshot URI on an address that does not answer: the agent uses the camera's",
            quirk="advertised_address",
        ),
        presets=Cell(
            NOT_SUPPORTED,
            "GetPresets answers HTTP 200 with an empty body: 400 `onvif_unsupported_action`",
        ),
    ),
    "reolink": _row(
        h265=_NO_H265,
        snapshot=Cell(
            WORKED_AROUND,
            "the snapshot URI's port does not answer: the agent grabs a frame of the smallest "
            "stream",
            quirk="snapshot_port",
        ),
        imaging=Cell(
            WORKED_AROUND,
            "values on 0..255: the agent reads the ranges from GetOptions",
            quirk="imaging_scale",
        ),
    ),
    "tapo": _row(
        h265=_NO_H265,
        snapshot=_NO_SNAPSHOT,
        imaging=_NO_IMAGING,
        ptz_continuous=Cell(
            WORKED_AROUND,
            "speed and Timeout ignored: the agent's safety Stop ends the move",
            quirk="ptz_ignore_timeout",
        ),
    ),
    "uniview": _row(
        **_PTZ_NONE,
        ptz_absolute=_NO_PTZ,
        identity=Cell(
            WORKED_AROUND,
            f"camera clock {UNIVIEW_CLOCK_SKEW / 60:g} min off: the agent signs WS-Security "
            "with the camera's clock",
            quirk="clock_skew",
        ),
    ),
}


def _peer(outcome: str, test: str, note: str = "") -> Cell:
    return Cell(outcome, note, test=test)


#: The third-party server; `test` is the function in PEER_TEST_FILE behind the cell ("" when
#: no test covers it: the cell then states what its configuration and code show).
PEER_EXPECTED: dict[str, Cell] = {
    "discovery": _peer(SUPPORTED, "test_discover_probe_reads_identity_and_profiles"),
    "identity": _peer(SUPPORTED, "test_device_streams_snapshot"),
    "profiles": _peer(SUPPORTED, "test_discover_probe_reads_identity_and_profiles"),
    "h265": _peer(
        SUPPORTED,
        "test_h265_profile_through_media2",
        "H.265 read through Media2 (`adv_enable_media2=1`); Media 1 calls the profile H264",
    ),
    "snapshot": _peer(SUPPORTED, "test_device_streams_snapshot"),
    "ptz_continuous": _peer(SUPPORTED, "test_ptz_continuous_and_absolute"),
    "ptz_relative": _peer(SUPPORTED, "test_ptz_step_home_presets"),
    "ptz_absolute": _peer(SUPPORTED, "test_ptz_continuous_and_absolute"),
    "presets": _peer(SUPPORTED, "test_ptz_step_home_presets"),
    "home": _peer(SUPPORTED, "test_ptz_step_home_presets"),
    "imaging": _peer(
        NOT_SUPPORTED, "test_users_hidden_and_imaging_absent", "no Imaging service: 400"
    ),
    "encoder": _peer(
        NOT_SUPPORTED,
        "test_encoder_write_not_applied_is_refused",
        "encoder writes not applied: 4xx",
    ),
    "users": _peer(
        NOT_SUPPORTED,
        "test_users_hidden_and_imaging_absent",
        "users hidden: a password change is a 400",
    ),
    "network": _peer(
        NOT_SUPPORTED,
        "test_network_read_refusal_is_permanent",
        "empty or refused answer: a permanent 4xx",
    ),
    "reboot": _peer(
        SUPPORTED,
        "test_reboot_fails_harmlessly",
        "SystemReboot calls reboot(2); the test runs the server unprivileged, so it checks "
        "that the call is harmless",
    ),
    "events": _peer(NOT_SUPPORTED, "", "untested: the agent subscribes to no ONVIF events"),
}


def _mark(outcome: str) -> str:
    return {SUPPORTED: "yes", WORKED_AROUND: "worked around", NOT_SUPPORTED: "no"}[outcome]


def render() -> str:
    """The compatibility section's Markdown (between the markers in docs/cameras.md)."""
    personas = sorted(EXPECTED)
    notes: list[str] = []

    def cell(c: Cell) -> str:
        text = _mark(c.outcome)
        if not c.note:
            return text
        if c.note not in notes:
            notes.append(c.note)
        return f"{text} [{notes.index(c.note) + 1}]"

    head = ["Capability", *personas, f"`{PEER}`"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    peer_tests: list[str] = []
    for key, label in CAPABILITIES:
        row = [label, *(cell(EXPECTED[p][key]) for p in personas)]
        peer = PEER_EXPECTED[key]
        text = cell(peer)
        if peer.test:
            if peer.test not in peer_tests:
                peer_tests.append(peer.test)
            text += f" (t{peer_tests.index(peer.test) + 1})"
        row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    out = [
        "Each persona column is checked by `tests/hil/test_compat.py` against a simulated "
        "camera of that persona (`docs/simulator.md`, Personas); the expected matrix is "
        '`tests/compat.py`. "yes": the agent does it; "worked around": it does it although '
        'the persona\'s quirk is on; "no": the agent answers a 4xx error saying why.',
        "",
        "Personas: " + "; ".join(f"`{p}` {PERSONAS[p].display_name}" for p in personas) + ".",
        "",
        *lines,
        "",
        "Notes:",
        "",
        *(f"{i + 1}. {n}" for i, n in enumerate(notes)),
        "",
        f"Tests behind the `{PEER}` column (`{PEER_TEST_FILE}`):",
        "",
        *(f"- t{i + 1}: `{t}`" for i, t in enumerate(peer_tests)),
    ]
    return "\n".join(out) + "\n"


def between(text: str, begin: str, end: str) -> str | None:
    """The text between the markers (exclusive), None without both."""
    _head, found, rest = text.partition(begin)
    body, closed, _tail = rest.partition(end)
    return body if found and closed else None


def _replace(path: Path, begin: str, end: str, body: str, section: str) -> bool:
    text = path.read_text(encoding="utf-8")
    block = f"{begin}\n{body}{end}"
    if between(text, begin, end) is not None:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        new = head + block + tail
    else:
        new = text.rstrip("\n") + f"\n\n## {section}\n\n" + block + "\n"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def rewrite(doc: Path = DOC, sim_doc: Path = SIM_DOC) -> list[Path]:
    """Put render() between the markers of `doc` (appending a section if it has none) and
    the persona list into `sim_doc`; the files that changed."""
    changed = []
    if _replace(doc, BEGIN, END, render(), "Compatibility by camera make"):
        changed.append(doc)
    if _replace(sim_doc, PERSONAS_BEGIN, PERSONAS_END, render_markdown(), "Personas"):
        changed.append(sim_doc)
    return changed


def main() -> int:
    changed = rewrite()
    for path in (DOC, SIM_DOC):
        print(f"{path}: {'rewritten' if path in changed else 'up to date'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
