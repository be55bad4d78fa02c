"""The hardware-in-the-loop world of the tests: `agent.sim.world` (re-exported here) and the
test-only pieces: one simulated camera, the agent's ONVIF control of it, third-party peers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from agent.camera.control import OnvifControl
from agent.camera.session import OnvifSession
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.world import (
    CameraAddresses,
    CameraSpec,
    ChildProcess,
    PeerAddresses,
    PeerSpec,
    RtspCameraSpec,
    SimCameraSpec,
    World,
    show_text_qr,
)
from tests.peers.onvif_simple_server import (
    PEERS_DIR,
    OnvifSimpleServer,
    PeerConfig,
    StreamProfile,
    build,
)

__all__ = [
    "CameraAddresses",
    "CameraSpec",
    "ChildProcess",
    "PeerAddresses",
    "PeerSpec",
    "RtspCameraSpec",
    "SimCameraSpec",
    "World",
    "onvif_control",
    "onvif_simple_server",
    "show_text_qr",
    "sim_camera",
    "stop_process",
    "wait_until",
]


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


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


def onvif_simple_server(
    user: str, password: str, *, instance: str = "default", strict: bool = False
) -> PeerSpec:
    """onvif_simple_server (tests/peers) as a fleet entry: its ONVIF service on loopback, its
    video from a simulated camera of the same login. Raises PeerUnavailable when entered on a
    machine where it cannot be built."""

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[PeerAddresses]:
        await asyncio.to_thread(build, PEERS_DIR / instance)
        async with sim_camera(
            SimCameraConfig(username=user, password=password, serial="OSSVIDEO")
        ) as cam:
            profiles = tuple(
                StreamProfile(
                    name=f"Profile_{i}",
                    width=w,
                    height=h,
                    rtsp_url=f"rtsp://%s:{cam.rtsp_port}{cam.model.profile(token).rtsp_path}",
                    snapshot_url=f"http://%s:{cam.port}/onvif/snapshot?profile={token}",
                )
                for i, (token, w, h) in enumerate((("main", 1920, 1080), ("sub", 640, 360)))
            )
            config = PeerConfig(username=user, password=password, profiles=profiles, strict=strict)
            async with OnvifSimpleServer(instance, config) as peer:
                yield PeerAddresses(
                    name="onvif_simple_server",
                    device_url=peer.device_url,
                    username=user,
                    password=password,
                )

    return PeerSpec(start)


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str = "condition"
) -> float:
    """Poll `check` (plain or async) until true; the seconds it took. TimeoutError after
    `timeout` seconds, naming `what`."""
    t0 = time.monotonic()
    while True:
        ok = check()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)
