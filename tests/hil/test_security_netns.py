"""The local API off loopback, for real: the agent runs in network namespace A listening on its
veth address; a client in namespace B gets nothing without the token. An agent told to listen
off loopback without a token refuses to start."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TOKEN = "sec-api-token-7f3a"
ADDR_A, ADDR_B = "10.202.0.1", "10.202.0.2"

CLIENT = """
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    tag = secrets.token_hex(3)
    a, b = f"api{tag}a", f"api{tag}b"
    created: list[str] = []
    try:
        for ns in (a, b):
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"ip netns unavailable: {exc.stderr.decode().strip()}")
            created.append(ns)
        _ip("link", "add", "apa0", "netns", a, "type", "veth", "peer", "name", "apb0", "netns", b)
        for ns, dev, addr in ((a, "apa0", ADDR_A), (b, "apb0", ADDR_B)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield a, b
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def _config(tmp: Path, port: int, token: str | None) -> Path:
    path = tmp / f"agent-{port}.toml"
    api = f'[api]\nlisten = "{ADDR_A}:{port}"\n' + (f'token = "{token}"\n' if token else "")
    path.write_text(
        f'[agent]\nstate_dir = "{tmp / "state"}"\n{api}'
        "[discovery]\nmulticast = false\nmdns = false\n"
    )
    return path


def _ask(ns: str, url: str, token: str | None = None) -> int:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, url]
    out = subprocess.run(
        [*argv, *([token] if token else [])], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_api_off_loopback_needs_the_token(
    namespaces: tuple[str, str], tmp_path: Path, record_reliability: Callable[..., None]
) -> None:
    a, b = namespaces
    port = 18080 + secrets.randbelow(1000)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    cmd = ["ip", "netns", "exec", a, sys.executable, "-m", "agent", "run", "--config"]
    agent = subprocess.Popen(
        [*cmd, str(_config(tmp_path, port, TOKEN))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = f"http://{ADDR_A}:{port}/api/v1/status"
        deadline = time.monotonic() + 30
        while True:
            try:
                if _ask(b, url, TOKEN) == 200:
                    break
            except (AssertionError, ValueError):
                pass
            assert agent.poll() is None, "the agent stopped"
            assert time.monotonic() < deadline, "the API never answered"
            time.sleep(0.3)
        answers = {
            "no token": _ask(b, url),
            "wrong token": _ask(b, url, "wrong-token"),
            "/cameras, no token": _ask(b, f"http://{ADDR_A}:{port}/api/v1/cameras"),
            "right token": _ask(b, url, TOKEN),
        }
        assert answers == {
            "no token": 401, "wrong token": 401, "/cameras, no token": 401, "right token": 200
        }  # fmt: skip
    finally:
        agent.terminate()
        try:
            _, err = agent.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            _, err = agent.communicate()
    assert TOKEN.encode() not in err
    record_reliability(
        "security",
        "local API off loopback (network namespace)",
        inputs=len(answers),
        result=", ".join(f"{asked} {status}" for asked, status in answers.items()),
    )


def test_no_token_off_loopback_refuses_to_start(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    a, _ = namespaces
    cmd = ["ip", "netns", "exec", a, sys.executable, "-m", "agent", "run", "--config"]
    done = subprocess.run(
        [*cmd, str(_config(tmp_path, 18999, None))], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "token" in done.stderr.lower() and "Traceback" not in done.stderr
    assert json.dumps(done.stderr)  # a plain message
