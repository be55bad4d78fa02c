"""`make demo FLEET=mixed`: one simulated camera per vendor persona and one RTSP-only camera,
the whole chain (about a minute: run by `make reliability`, not `make test`)."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.hil.test_cli import CLI, REPO


def test_demo_mixed_fleet_passes_against_every_persona_and_an_rtsp_camera() -> None:
    from agent.sim.camera.persona import PERSONAS

    make = shutil.which("make")
    if make is not None:  # `make demo FLEET=mixed` runs this command
        dry = subprocess.run(
            [make, "--no-print-directory", "-n", "-C", str(REPO), "demo", "FLEET=mixed"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "camera-agent demo --fleet mixed" in dry.stdout, dry.stdout + dry.stderr
    out = subprocess.run(
        [*CLI, "demo", "--fleet", "mixed", "--once", "--frames", "5"],
        capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines[-1] == "== demo passed", out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    table = out.stdout.split("== WS-Discovery probe")[1].split("== mobile app")[0]
    assert table.count(" online ") == len(PERSONAS)  # every ONVIF camera discovered
    assert sum(" RTSP only rtsp://127.0.0.1:" in line for line in lines) == 1
    provisioned = [line for line in lines if line.lstrip().startswith("provisioned as stream")]
    assert len(provisioned) == len(PERSONAS) + 1  # every camera bound by its QR code
    assert not any(line.startswith("!!") for line in lines)
    live = [line for line in lines if "; camera sessions held " in line]
    assert len(live) == len(PERSONAS) + 1  # every camera watched live over WebRTC
