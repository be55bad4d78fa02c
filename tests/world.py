"""Pieces of a hardware-in-the-loop world shared by the tests: a simulated camera and the
agent's ONVIF control of it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from agent.camera.control import OnvifControl
from agent.camera.session import OnvifSession
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig


@contextlib.asynccontextmanager
async def sim_camera(config: SimCameraConfig) -> AsyncIterator[SimCamera]:
    """One simulated camera on free loopback ports, stopped on exit."""
    sim = SimCamera(config)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def onvif_control(cam: SimCamera, user: str, password: str) -> AsyncIterator[OnvifControl]:
    """The agent's ONVIF control of `cam`, connected as `user`; closed (session too) on exit."""
    session = OnvifSession("127.0.0.1", cam.port, credentials=[Credentials(user, password)])
    await session.connect()
    ctl = OnvifControl(session)
    try:
        yield ctl
    finally:
        await ctl.close()
