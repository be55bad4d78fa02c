"""The local API's contract, checked by schemathesis against a running agent.

The real agent (discovery, inventory, cloud service, local API) runs on loopback in a thread of
its own event loop, with a simulated camera it found by probing and the simulated cloud as its
activation server. schemathesis reads `GET /api/v1/openapi.json` and sends schema-valid and
schema-invalid requests to every operation (its examples, coverage and fuzzing phases), then
chains operations through the links it infers (the stateful phase). Every check is on; the run
is reproducible (fixed seed, derandomized, no example database) and must find nothing.

Two statuses are configured as expected beside schemathesis' defaults, because the API's
contract (docs/api.md) gives them a meaning JSON Schema cannot carry:
- 400 for a schema-valid request: the camera or the activation server refused the value (outside
  the camera's own ranges, an unknown preset or user, an unknown token, an unusable SDP offer).
  A schema-valid request is never a 422: that is what positive_data_acceptance still checks.
- 413 for a schema-invalid request: a body over the size limit is refused before it is read.

The camera is the throwaway part: every operation is exercised on it, the destructive ones
included (network ports, user passwords, encoder, presets). After a call that changed it, it is
replaced by a fresh one on its first ports with its first settings, so that a fuzzed
`PUT /network` that moves it, or a password change that locks the agent out, does not carry
over into later requests. There is no operation left out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from hypothesis import settings

from agent import __version__
from agent.api.openapi import openapi_document
from agent.app import Agent
from agent.config import AgentConfig, CloudConfig, DiscoveryConfig
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.cloud.app import SimCloud

T = TypeVar("T")

USER, PASSWORD = "admin", "fuzz-pw"
#: Fuzzed cases per operation (the examples and coverage phases send what they derive from the
#: document), and state machine runs (scenarios of up to 10 calls) in the stateful phase.
#: FUZZ_EXAMPLES=N multiplies both (as for the fuzz tests); CONTRACT_SEED picks another run.
SCALE = max(0.1, float(os.environ.get("FUZZ_EXAMPLES", "1") or "1"))
EXAMPLES = max(5, int(25 * SCALE))
SCENARIOS = max(10, int(100 * SCALE))
SEED = int(os.environ.get("CONTRACT_SEED", "20240611"))
#: Seconds the agent gets to reach a camera that was just replaced.
log = logging.getLogger(__name__)
CAMERA_READY_TIMEOUT = 20.0
#: Seconds a call into the agent's loop may take (starting or stopping everything included).
LOOP_CALL_TIMEOUT = 60.0

#: schemathesis' default expected statuses, with 400 for schema-valid requests and 413 for
#: schema-invalid ones (see above).
ACCEPTED = [*("2xx", "3xx", "401", "403", "404", "409", "429", "5xx"), "400"]
REFUSED = [
    *("400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"),
    "413",
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES, "database": "none", "deterministic": True},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ACCEPTED},
            "negative_data_rejection": {"expected-statuses": REFUSED},
        },
    }
)

# Raw SDP offers (`Content-Type: application/sdp`) are text: sent as UTF-8 like text/plain.
schemathesis.serializer.alias("application/sdp", "text/plain")

#: A successful call with one of these methods may leave the camera changed for the next test
#: case; one to these paths makes it move away or lock the agent out: replaced at once.
_MUTATING = frozenset({"PUT", "POST", "DELETE"})
_MOVES_CAMERA = ("/network", "/users/")


class LiveAgent:
    """The agent, a simulated camera and the simulated cloud on a loop in a thread of their own
    (the test's HTTP client blocks)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent", daemon=True)
        self.cloud = SimCloud()
        self.cam_config = SimCameraConfig(username=USER, password=PASSWORD, serial="FUZZ0001")
        self.camera: SimCamera | None = None
        self.agent: Agent | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.base = ""
        self.camera_id = ""
        self.dirty = False  # the camera may differ from a fresh one
        #: (method, path template, status) -> answers seen
        self.answers: Counter[tuple[str, str, int]] = Counter()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(LOOP_CALL_TIMEOUT)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    def stop(self) -> None:
        try:
            self.run(self._shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def _start(self) -> None:
        await self.cloud.start()
        camera = SimCamera(self.cam_config)
        await camera.start()
        self.camera = camera
        # A replacement comes back on the same ports.
        self.cam_config = replace(
            self.cam_config,
            port=camera.port,
            rtsp_port=camera.rtsp_port,
            sofia_port=camera.sofia_port,
        )
        cfg = AgentConfig(
            state_dir=self.state_dir,
            api_host="127.0.0.1",
            api_port=0,
            webrtc_addresses=("127.0.0.1",),
            health_interval=3600.0,  # no load shedding on a busy test machine
            cloud=CloudConfig(activation_url=self.cloud.url),
            discovery=DiscoveryConfig(
                multicast=False, mdns=False, probe=(("127.0.0.1", camera.port),)
            ),
            default_credentials=(Credentials(USER, Secret(PASSWORD)),),
        )
        agent = Agent(cfg)
        self.agent = agent
        self._task = asyncio.create_task(agent.run(self._stop))
        await asyncio.wait_for(agent.ready.wait(), CAMERA_READY_TIMEOUT)
        await self._camera_ready()
        self.camera_id = agent.inventory.cameras()[0].id
        self.base = f"http://127.0.0.1:{agent.api.port}"

    async def _camera_ready(self) -> None:
        """Until the agent has the camera online and can run a command on it."""
        assert self.agent is not None
        inventory = self.agent.inventory
        async with asyncio.timeout(CAMERA_READY_TIMEOUT):
            while True:
                cams = [c for c in inventory.cameras() if c.state == "online" and c.kind == "onvif"]
                if cams:
                    try:
                        control = await inventory.control(cams[0].id)
                        await control.device_info()
                    except Exception:  # reconnecting: try again
                        pass
                    else:
                        return
                await asyncio.sleep(0.02)

    async def _replace_camera(self) -> None:
        assert self.camera is not None and self.agent is not None
        await self.camera.stop()
        self.camera = None
        camera = SimCamera(self.cam_config)
        await camera.start()
        self.camera = camera
        # A fuzzed PUT /network may have moved the camera, and the agent followed it there: point
        # the agent back at the fresh camera's own port.
        self.agent.inventory.set_http_port(self.camera_id, camera.port)
        self.agent.inventory.set_paused(self.camera_id, False)
        try:
            await self._camera_ready()
        except TimeoutError:
            # Not back by itself after the fuzzed calls (seen once in a loaded full run after a
            # port move): start this run from a camera the agent learns anew, as an operator would.
            # A fuzzed POST /api/v1/cameras may have given the agent another login for this
            # host: add it again with the camera's own.
            log.warning("camera not back after its replacement; forgetting and adding it again")
            self.agent.inventory.forget(self.camera_id)
            login = Credentials(USER, Secret(PASSWORD))
            await self.agent.inventory.add_onvif(camera.device_url, login)
            await self._camera_ready()

    async def _camera_back(self) -> None:
        assert self.camera is not None and self.agent is not None
        if all(c.id != self.camera_id for c in self.agent.inventory.cameras()):
            await self.agent.inventory.add_onvif(self.camera.device_url)
            await self._camera_ready()

    def fresh_camera(self) -> None:
        """A camera as it was at the start, if the last calls may have changed it."""
        if self.dirty:
            self.run(self._replace_camera())
            self.dirty = False

    async def _shutdown(self) -> None:
        self._stop.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(self._task, 10)
        finally:
            if self.camera is not None:
                await self.camera.stop()
            await self.cloud.stop()

    # What each call needs around it.

    def prepare(self, case: Any) -> None:
        params = case.path_parameters
        given = str(params.get("camera_id", "")) if params else ""
        if _is_camera_id(given) and not given.lower().endswith("f"):
            # A random UUID names no camera (404 before anything else is looked at): aim at the
            # camera the agent knows, so that bodies reach the camera and its answers come back.
            # One in sixteen (last digit f) is left as it is, for the 404 of an unknown camera.
            params["camera_id"] = self.camera_id
        body = case.body
        url = body.get("activation_url") if isinstance(body, dict) else None
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            # The agent dials what it is given: only ever the simulated cloud, on loopback.
            body["activation_url"] = self.cloud.url
        if isinstance(body, dict) and self.camera is not None:
            # Cameras added by URL: the simulated camera's own URLs, on loopback.
            rtsp, http = ("rtsp://",), ("http://", "https://")
            for key, schemes, url in (
                ("rtsp_url", rtsp, self.camera.rtsp_url("main")),
                ("sub_url", rtsp, self.camera.rtsp_url("sub")),
                ("onvif_url", http, self.camera.device_url),
                ("snapshot_url", http, self.camera.snapshot_url()),
            ):
                given = body.get(key)
                usable = isinstance(given, str) and len(given) <= 1024
                if usable and str(given).lower().startswith(schemes):
                    body[key] = url

    def after(self, case: Any, response: requests.Response) -> None:
        self.answers[case.method.upper(), case.path, response.status_code] += 1
        if case.path == "/api/v1/cameras/{camera_id}" and response.status_code == 200:
            self.run(self._camera_back())  # a DELETE forgot it: add it again, same id
        if case.method.upper() in _MUTATING and response.status_code < 300:
            self.dirty = True
            if any(part in case.path for part in _MOVES_CAMERA):
                self.fresh_camera()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    agent = LiveAgent(tmp_path_factory.mktemp("schemathesis") / "state")
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


# Test collection needs the operations before any agent runs: the document is built here as
# the agent builds it, and test_the_agent_serves_the_document_under_test checks it is the one
# the running agent serves. The stateful phase loads it from the running agent.
schema = schemathesis.openapi.from_dict(openapi_document(__version__), config=CONFIG)


def test_the_agent_serves_the_document_under_test(live: LiveAgent) -> None:
    served = requests.get(f"{live.base}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == schema.raw_schema


def _is_camera_id(text: object) -> bool:
    try:
        uuid.UUID(urllib.parse.unquote(str(text)))  # path values may come percent-encoded
    except ValueError:
        return False
    return True


@schema.parametrize()
def test_every_operation(case: Any, live: LiveAgent) -> None:
    live.fresh_camera()
    live.prepare(case)
    response = case.call(base_url=live.base)
    live.after(case, response)
    case.validate_response(response)


def test_the_documented_examples_change_the_camera(live: LiveAgent) -> None:
    """Each changing operation's documented example, sent as it is, is carried out by the
    camera: the destructive ones (ports, the agent's own user's password) included."""
    done = []
    for result in schema.get_all_operations():
        operation = result.ok()
        raw = operation.definition.raw
        media = raw.get("requestBody", {}).get("content", {}).get("application/json", {})
        media = media.get("schema", {})
        name = media.get("$ref", "").rsplit("/", 1)[-1]
        examples = schema.raw_schema["components"]["schemas"].get(name, {}).get("examples")
        if not examples or operation.method.upper() not in _MUTATING:
            continue
        params = {"camera_id": live.camera_id, "username": USER}
        case = operation.Case(
            path_parameters={p: params[p] for p in params if "{" + p + "}" in operation.path},
            body=examples[0],
            media_type="application/json",
        )
        live.fresh_camera()
        live.prepare(case)
        response = case.call(base_url=live.base)
        live.after(case, response)
        case.validate_response(response)
        if raw["operationId"] in ("ptz_preset_delete", "ptz_preset_apply"):
            assert response.status_code == 400  # no such preset on a fresh camera
            continue
        assert response.status_code == 200, (operation.label, response.text)
        done.append(raw["operationId"])
    assert {"set_network", "set_user_password", "set_encoder", "set_run_state"} <= set(done)


def test_stateful_sequences(live: LiveAgent) -> None:
    loaded = schemathesis.openapi.from_url(f"{live.base}/api/v1/openapi.json", config=CONFIG)

    class Machine(loaded.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            live.fresh_camera()

        def before_call(self, case: Any) -> None:
            live.prepare(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live.base}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            live.after(case, response)

    linked = "/api/v1/onvif/{camera_id}/ptz/preset/apply"
    applied_before = live.answers["POST", linked, 200]
    Machine.run(
        settings=settings(
            max_examples=SCENARIOS,
            database=None,
            derandomize=True,
            deadline=None,
            stateful_step_count=10,
        )
    )
    # Sequences ran: a preset made in one step was applied in a later one (an OpenAPI link).
    assert live.answers["POST", linked, 200] > applied_before
