"""The cloud's reboot when the box may be rebooted (`[agent] reboot_command`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent import config
from agent.app import EXIT_RESTART, reboot_box
from agent.errors import ConfigError


async def test_the_configured_command_runs(tmp_path: Path) -> None:
    marker = tmp_path / "rebooted"
    command = (sys.executable, "-c", f"open({str(marker)!r}, 'w').close()")
    assert await reboot_box(command) == 0
    assert marker.exists()


@pytest.mark.parametrize(
    "command",
    [(sys.executable, "-c", "raise SystemExit(1)"), ("/nonexistent/reboot-tool",)],
)
async def test_a_failing_command_falls_back_to_restarting_the_agent(
    command: tuple[str, ...],
) -> None:
    assert await reboot_box(command) == EXIT_RESTART


def test_reboot_command_setting(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nreboot_command = ["systemctl", "reboot"]\n')
    assert config.load(path, env={}).reboot_command == ("systemctl", "reboot")
    assert config.AgentConfig().reboot_command == ()
    path.write_text('[agent]\nreboot_command = ["bin/reboot"]\n')
    with pytest.raises(ConfigError, match="reboot_command"):
        config.load(path, env={})
