"""`camera-agent` argument parsing: what each command imports, its help, its options."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import cli
from agent import config as agent_config
from agent.errors import ConfigError
from agent.net.urls import parse_probe

#: Modules the daemon never needs: the simulators, the demo and the other commands.
NOT_FOR_RUN = (
    "agent.sim",
    "agent.demo",
    "agent.status",
    "agent.audit_cli",
    "agent.hw_cli",
    "agent.cloud.cli",
    "agent.update.cli",
)

_MODULES_AFTER = """
import json, sys
from agent.cli import build_parser
try:
    args = build_parser().parse_args(sys.argv[1:])
    handler = args.handler.__module__
except SystemExit:
    handler = None
print(json.dumps({"handler": handler, "modules": sorted(sys.modules)}))
"""


def _modules_after(*argv: str) -> tuple[str | None, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout.splitlines()[-1])
    return data["handler"], set(data["modules"])


def _baseline(*imports: str) -> set[str]:
    code = f"import json, sys, {', '.join(imports)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout))


def _unwanted(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in NOT_FOR_RUN))


def test_run_imports_only_what_the_daemon_needs() -> None:
    handler, modules = _modules_after("run", "--state-dir", "/nonexistent", "--log-level", "debug")
    assert handler == "agent.app"
    assert _unwanted(modules) == []
    # Parsing `run` adds nothing to what the daemon's own module imports.
    extra = modules - _baseline("agent.cli", "agent.app")
    assert not {m for m in extra if m.split(".")[0] in {"agent", "av", "aiortc", "numpy"}}, extra


def test_run_help_imports_no_simulator(capfd: pytest.CaptureFixture[str]) -> None:
    handler, modules = _modules_after("run", "--help")
    assert handler is None  # --help exits
    assert _unwanted(modules) == []


def test_top_level_help_lists_every_command_and_imports_none() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for name in ("run", "discover", "demo", "activate", "status", "log", "update", "hw", "sim"):
        assert re.search(rf"^    {name} ", out.stdout, re.MULTILINE), (name, out.stdout)
    _, modules = _modules_after("--help")
    assert "agent.app" not in modules and _unwanted(modules) == []


def test_subcommand_help_is_complete() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "sim", "camera", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for option in ("--rtsp-port", "--count", "--faults", "--ready-file", "--log-level"):
        assert option in out.stdout
    assert "Run one or more simulated ONVIF cameras" in out.stdout


# ---- help texts --------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction]:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def _walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    """(prog, help text) of this parser and of every subcommand under it, loaded."""
    yield parser.prog, parser.format_help()
    for action in _subparsers(parser):
        for sub in dict.fromkeys(action.choices.values()):
            yield from _walk(sub)


def _entries(text: str) -> list[str]:
    """The option and argument entries of a help text (each with its wrapped lines)."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^  \S", line):
            entries.append(line)
        elif entries and re.match(r"^\s{3,}\S", line):
            entries[-1] += " " + line.strip()
    return entries


def test_every_help_shows_each_default_once() -> None:
    pages = dict(_walk(cli.build_parser()))
    assert {"camera-agent run", "camera-agent sim camera", "camera-agent update status"} <= set(
        pages
    )
    for prog, text in pages.items():
        assert "(default: None)" not in text, prog
        assert "(default: False)" not in text, prog
        for entry in _entries(text):
            assert entry.lower().count("default") <= 1, (prog, entry)
    run = " ".join(_entries(pages["camera-agent run"]))
    assert "(default: /etc/camera-agent/agent.toml)" in run
    assert "(default: 3.0)" in " ".join(_entries(pages["camera-agent discover"]))


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "DEBUG", "run"],
        ["run", "--log-level", "DEBUG"],
        ["run", "--log-level=debug", "--state-dir", "/x"],
        ["sim", "camera", "--log-level", "DEBUG"],
        ["sim", "--log-level", "DEBUG", "cloud"],
        ["update", "status", "--log-level", "DEBUG"],
        ["--log-level", "ERROR", "status", "--log-level", "DEBUG"],
    ],
)
def test_log_level_before_or_after_the_command(argv: list[str]) -> None:
    assert cli.build_parser().parse_args(argv).log_level == "DEBUG"


def test_log_level_default_and_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.build_parser().parse_args(["hw"]).log_level == "INFO"
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["hw", "--log-level", "LOUD"])
    assert exc.value.code == 2
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


# ---- camera addresses (--probe, [discovery] probe) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("http://127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("http://127.0.0.1:8000/", ("127.0.0.1", 8000)),
        ("http://127.0.0.1:8000/onvif/device_service", ("127.0.0.1", 8000)),
        ("HTTP://Cam-1.lan", ("Cam-1.lan", 80)),
        ("http://[::1]:8080/onvif/device_service", ("::1", 8080)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("[::1]", ("::1", 80)),
        ("192.168.1.64", ("192.168.1.64", 80)),
        ("camera.local", ("camera.local", 80)),
        (" 10.0.0.7:554 ", ("10.0.0.7", 554)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_probe_forms_accepted(text: str, expected: tuple[str, int]) -> None:
    assert parse_probe(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("999.1.1.1:80", "not a valid IPv4 address"),
        ("1.2.3:80", "not a valid IPv4 address"),
        ("256.0.0.1", "not a valid IPv4 address"),
        ("10.0.0.1:0", "port"),
        ("10.0.0.1:65536", "port"),
        ("10.0.0.1:http", "port"),
        ("10.0.0.1:", "port"),
        ("[::1]:99999", "port"),
        ("[::zz]:80", "IPv6"),
        ("fe80::1", "brackets"),
        ("", "empty"),
        ("cam era:80", "host"),
        ("-cam:80", "host"),
        ("a..b:80", "host"),
        ("http://", "host"),
        ("ftp://10.0.0.1", "http://"),
        ("https://10.0.0.1", "plain HTTP"),
        ("http://10.0.0.1:8000/cgi-bin/x", "/onvif/device_service"),
        ("http://10.0.0.1/?a=1", "query"),
        ("0.0.0.0:80", "not a camera"),
        ("x" * 300, "host"),
    ],
)
def test_probe_refusals_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_probe(text)


def test_probe_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="--username") as exc:
        parse_probe("http://admin:Sekr1t@10.0.0.1:80")
    assert "Sekr1t" not in str(exc.value)


@pytest.mark.parametrize("command", ["run", "discover"])
def test_probe_flag_accepts_urls(command: str) -> None:
    args = cli.build_parser().parse_args(
        [command, "--probe", "http://127.0.0.1:8000", "--probe", "[::1]:81", "--probe", "cam"]
    )
    assert args.probe == [("127.0.0.1", 8000), ("::1", 81), ("cam", 80)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("999.1.1.1:80", "argument --probe: 999.1.1.1 is not a valid IPv4 address"),
        ("10.0.0.1:70000", "argument --probe: port must be 1-65535, got '70000'"),
        ("no host", "argument --probe: "),
    ],
)
def test_probe_flag_refuses_bad_addresses(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["discover", "--probe", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: camera-agent discover" in err
    assert "Traceback" not in err


def test_config_probes_use_the_same_parser(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[discovery]\nprobe = ["http://192.0.2.5:8000/onvif/device_service", "192.0.2.6"]\n'
    )
    assert agent_config.load(good, env={}).discovery.probe == (
        ("192.0.2.5", 8000),
        ("192.0.2.6", 80),
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[discovery]\nprobe = ["999.1.1.1:80"]\n')
    with pytest.raises(ConfigError, match=r"discovery\.probe: 999\.1\.1\.1 is not a valid IPv4"):
        agent_config.load(bad, env={})


def test_api_flag_checks_the_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.build_parser().parse_args(["status", "--api", "[::1]:8780"]).api == ("::1", 8780)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["status", "--api", "300.1.1.1:8780"])
    assert "argument --api: 300.1.1.1 is not a valid IPv4 address" in capsys.readouterr().err


# ---- documented paths --------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _unit_option(name: str) -> str:
    unit = (REPO / "systemd" / "camera-agent.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    match = re.search(rf"{name} (\S+)", exec_start)
    assert match, exec_start
    return match.group(1)


def test_update_docs_use_the_installed_units_paths() -> None:
    root, trust = _unit_option("--root"), _unit_option("--trust")
    assert root == "/var/lib/camera-agent/install"
    for doc in ("README.md", "docs/updates.md", "docs/install.md"):
        text = " ".join((REPO / doc).read_text().replace("\\\n", " ").split())
        roots = re.findall(r"--root (/\S+)", text)
        assert roots and set(roots) == {root}, (doc, roots)
        assert {t.rstrip("`") for t in re.findall(r"--trust (/\S+)", text)} <= {trust}, doc
