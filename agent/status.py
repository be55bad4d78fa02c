"""`camera-agent status`: what the running agent says about itself, or what its state dir holds.

Asks the local API (`GET /api/v1/status`) of the agent described by the config; when no agent
answers, reads the state directory instead and says the agent is not running (exit status 3,
as LSB status commands do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from agent import config as agent_config
from agent.errors import ConfigError
from agent.state import StateDir
from agent.update import journal
from agent.update.journal import root_from_env

#: Exit status when no agent answers.
EXIT_NOT_RUNNING = 3
TIMEOUT = 5.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from agent.cli import host_port

    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--config", default=None, help="TOML config (as for `run`)")
    p.add_argument("--state-dir", default=None, help="state directory (as for `run`)")
    p.add_argument(
        "--api", type=host_port, default=None, metavar="HOST:PORT", help="local API address"
    )


async def _ask(host: str, port: int, token: str | None) -> dict[str, Any] | None:
    shown = f"[{host}]" if ":" in host else host
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as s,
            s.get(f"http://{shown}:{port}/api/v1/status", headers=headers) as r,
        ):
            if r.status != 200:
                return {"error": f"local API answered HTTP {r.status}"}
            data = await r.json()
            return data if isinstance(data, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


def _offline(state: StateDir, root: Path | None = None) -> dict[str, Any]:
    activation = state.read_json("activation.json") if state.path.exists() else None
    inventory = state.read_json("inventory.json") if state.path.exists() else None
    cams = inventory.get("cameras", []) if isinstance(inventory, dict) else []
    act = activation if isinstance(activation, dict) else {}
    return {
        "running": False,
        "state_dir": str(state.path),
        "activation": {
            "activated": bool(act.get("agent_id")),
            "agent_id": act.get("agent_id"),
            "streams": [
                {"stream_name": s.get("stream_name"), "camera_id": s.get("camera_id")}
                for s in act.get("streams", [])
                if isinstance(s, dict)
            ],
        },
        "cameras": {"total": len(cams) if isinstance(cams, list) else 0},
        "update": {"journal": journal.load(root).summary()} if root is not None else None,
    }


def _conn_line(name: str, conn: Any) -> str:
    if not isinstance(conn, dict):
        return f"{name}: not connected"
    state = conn.get("state", "?")
    host = conn.get("hostname") or conn.get("url") or ""
    err = conn.get("last_error") or ""
    return f"{name}: {state} {host}".rstrip() + (f" (last error: {err})" if err else "")


def _relay_lines(relay: Any) -> list[str]:
    if not isinstance(relay, dict):
        return []
    lines = []
    t = relay.get("tunnels")
    if isinstance(t, dict):
        lines.append(
            f"tunnels: {t.get('open', 0)} open, {t.get('opened', 0)} opened, "
            f"{t.get('refused', 0)} refused, {t.get('failed', 0)} failed, "
            f"{int(t.get('bytes_out', 0)) / 1e6:.1f} MB to the cloud"
            + (f" (last refusal: {t['last_refusal']})" if t.get("last_refusal") else "")
        )
    r = relay.get("restream")
    if isinstance(r, dict):
        sources = r.get("sources") or []
        viewers = sum(int(s.get("subscribers", 0)) for s in sources if isinstance(s, dict))
        lines.append(
            f"restream: port {r.get('port')}, {len(sources)} stream(s), {viewers} viewer(s)"
        )
    for p in relay.get("push") or []:
        if isinstance(p, dict):
            why = f" ({p['reason']})" if p.get("reason") else ""
            lines.append(
                f"push: camera {p.get('camera_id')} -> {p.get('target')}: {p.get('state')}{why}"
            )
    return lines


def _health_lines(health: Any) -> list[str]:
    if not isinstance(health, dict):
        return []
    sys_ = health.get("system") or {}
    parts = []
    if isinstance(sys_.get("cpu_percent"), int | float):
        parts.append(f"cpu {sys_['cpu_percent']:.0f}%")
    mem = sys_.get("memory") or {}
    if isinstance(mem, dict) and mem.get("available") is not None:
        parts.append(f"memory available {int(mem['available']) / 2**20:.0f} MiB")
    if isinstance(sys_.get("process_rss_bytes"), int):
        parts.append(f"agent rss {sys_['process_rss_bytes'] / 2**20:.0f} MiB")
    if isinstance(sys_.get("temperature_celsius"), int | float):
        parts.append(f"{sys_['temperature_celsius']:.0f} °C")
    lag = health.get("loop_lag_seconds")
    if isinstance(lag, int | float):
        parts.append(f"loop lag {lag * 1000:.1f} ms")
    lines = ["host: " + ", ".join(parts)] if parts else []
    for cid, cam in sorted((health.get("cameras") or {}).items()):
        if not isinstance(cam, dict):
            continue
        rate = cam.get("bitrate_bps")
        fps = cam.get("fps")
        lines.append(
            f"  camera {cid}: {cam.get('state', '?')}"
            + (f", {rate / 1e6:.2f} Mbit/s" if isinstance(rate, int | float) else "")
            + (f", {fps:.0f} fps" if isinstance(fps, int | float) else "")
        )
    return lines


def hardware_lines(hardware: Any) -> list[str]:
    if not isinstance(hardware, dict):
        return []
    line = f"hardware: {hardware.get('id')} ({hardware.get('name')})"
    if hardware.get("forced"):
        line += ", forced by the config"
    if hardware.get("over_capacity"):
        line += f", more cameras than the {hardware.get('max_cameras')} it is sized for"
    lines = [line]
    shed = hardware.get("shed") or {}
    if shed.get("level"):
        shed_list = ", ".join(shed.get("shed") or [])
        lines.append(f"  load shed level {shed['level']} ({shed_list}): {shed.get('reason')}")
    return lines


def update_lines(update: Any) -> list[str]:
    if not isinstance(update, dict) or not update.get("enabled", True):
        return []
    j = update.get("journal") or {}
    state = j.get("state") or "idle"
    release = f", release {update['release']}" if update.get("release") else ""
    if state == "idle":
        return [f"update: none in progress{release}"]
    line = f"update: {state} {j.get('version') or ''}".rstrip()
    done, total = j.get("bytes") or 0, j.get("total")
    if state == "downloading":
        if isinstance(total, int) and total > 0:
            pct = 100 * done // total
            line += f": {done / 2**20:.1f} of {total / 2**20:.1f} MiB ({pct} %)"
        else:
            line += f": {done / 2**20:.1f} MiB"
    if state == "trial" and j.get("attempts"):
        line += f" (attempt {j['attempts']})"
    if j.get("error"):
        line += f": {j['error']}"
    return [line + release]


def _stream_line(stream: dict[str, Any]) -> str:
    name = stream.get("stream_name") or "(unnamed)"
    camera = stream.get("camera_id")
    return f"  stream {name} <- camera {camera}" if camera else f"  stream {name}: no camera bound"


def format_status(data: dict[str, Any]) -> str:
    act = data.get("activation") or {}
    lines = [
        "agent: "
        + ("running" if data.get("running", True) else "not running")
        + (f", version {data['version']}" if data.get("version") else ""),
        "activation: "
        + (f"activated as agent {act.get('agent_id')}" if act.get("activated") else "waiting"),
    ]
    lines.extend(_stream_line(s) for s in act.get("streams") or [] if isinstance(s, dict))
    if data.get("running", True):
        lines.append(_conn_line("endpoint", data.get("endpoint")))
        lines.append(_conn_line("streampoint", data.get("streampoint")))
        lines.extend(_relay_lines(data.get("relay")))
        lines.extend(_health_lines(data.get("health")))
        lines.extend(hardware_lines(data.get("hardware")))
    lines.extend(update_lines(data.get("update")))
    cams = data.get("cameras") or {}
    by_state = ", ".join(f"{k} {v}" for k, v in (cams.get("by_state") or {}).items())
    lines.append(f"cameras: {cams.get('total', 0)}" + (f" ({by_state})" if by_state else ""))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    try:
        cfg = agent_config.load(args.config)
        cfg = agent_config.with_flags(cfg, state_dir=args.state_dir, api=args.api)
    except ConfigError as exc:
        print(f"camera-agent status: {exc}", file=sys.stderr)
        return 2
    token = cfg.api_token.reveal() if cfg.api_token else None
    data = await _ask(cfg.api_host, cfg.api_port, token)
    running = data is not None and "error" not in data
    if data is None or not running:
        root = cfg.update.root or root_from_env()
        data = {
            **(await asyncio.to_thread(_offline, StateDir(cfg.state_dir), root)),
            **(data or {}),
        }
    else:
        data = {"running": True, **data}
    print(json.dumps(data, indent=2) if args.json else format_status(data))
    return 0 if running else EXIT_NOT_RUNNING
