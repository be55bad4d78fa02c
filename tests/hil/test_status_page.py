"""The console page `GET /` as a status page: its headers and token exemption over plain HTTP,
and the page itself in a real headless Chromium (DevTools protocol) against a running agent with
simulated cameras. The DevTools driver here (`Browser`, `chromium`) serves test_console.py too."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.api import ApiServer, build_app
from agent.app import Agent
from agent.secret import Secret
from agent.sim.camera.camera import SimCameraConfig
from tests.fakes import FakeDirectory, FakeRecord
from tests.world import SimCameraSpec, World, wait_until

CAM_PW = "page-pw"
TOKEN = "page-token-1"
CAM = "6f1c2b52-5bb5-4fd1-9b0e-0d6a1f0a9c11"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found (`make sysdeps` installs Debian's chromium)"
)
#: The state of the page the browser tests wait for.
PAGE_STATE = """JSON.stringify({
  text: document.body.innerText,
  blobs: [...document.querySelectorAll("img.thumb")].filter(i => i.src.startsWith("blob:")
    && i.complete && i.naturalWidth > 0).length,
  resources: performance.getEntriesByType("resource").map(e => e.name),
})"""


class Browser:
    """One headless Chromium page driven over the DevTools protocol; records console errors,
    uncaught exceptions and error log entries, and answers prompts with `prompt_text`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, prompt_text: str) -> None:
        self.ws = ws
        self.prompt_text = prompt_text
        self.errors: list[str] = []
        self.prompts = 0
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = fut
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        return await asyncio.wait_for(fut, 10)

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (None for undefined); KeyError when it threw."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise KeyError(json.dumps(reply["exceptionDetails"])[:500])
        return reply["result"].get("value")

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                self.errors.append(json.dumps(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.errors.append(json.dumps(params["entry"])[:500])
            elif method == "Page.javascriptDialogOpening":
                self.prompts += 1
                reply = {"accept": True, "promptText": self.prompt_text}
                await self.ws.send_json(
                    {"id": 0, "method": "Page.handleJavaScriptDialog", "params": reply}
                )

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium(
    tmp_path: Path, prompt_text: str = "", extra_args: Sequence[str] = ()
) -> AsyncIterator[Browser]:
    """Headless Chromium on a blank page; every host name but 127.0.0.1 fails to resolve."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        *extra_args,
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(20):
            while not port_file.exists() or not port_file.read_text().strip():
                await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            ws = await http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
            browser = Browser(ws, prompt_text)
            try:
                for domain in ("Runtime", "Log", "Page"):
                    await browser.send(f"{domain}.enable")
                yield browser
            finally:
                await browser.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


async def load_until(browser: Browser, url: str, *needles: str) -> dict[str, Any]:
    """Open `url` and wait until the page shows every needle and a decoded blob thumbnail."""
    await browser.send("Page.navigate", url=url)
    state: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError, TypeError):
            state = json.loads(await browser.evaluate(PAGE_STATE))
            if state["blobs"] >= 1 and all(n in state["text"] for n in needles):
                return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"page never showed {needles} with a thumbnail: {state}")


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    cams = [
        SimCameraConfig(password=CAM_PW, name="Porch", model="PorchCam-X1", serial="PCH1"),
        SimCameraConfig(password=CAM_PW, name="Yard", model="YardCam-Z9", serial="YRD2"),
    ]
    async with World([SimCameraSpec(c) for c in cams], state_dir=tmp_path / "state") as world:
        agent = await world.start_agent()
        await wait_until(lambda: world.online(2), 20)
        yield agent


@needs_chromium
async def test_page_shows_the_cameras_in_chromium(agent: Agent, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{agent.api.port}"
    async with chromium(tmp_path) as browser:
        state = await load_until(browser, f"{base}/", "PorchCam-X1", "YardCam-Z9", "online")
        await asyncio.sleep(0.5)  # late errors of the first refresh
        assert browser.errors == []
        assert browser.prompts == 0
    text = state["text"]
    assert text.count("online") >= 2
    assert "S/N PCH1" in text and "S/N YRD2" in text
    assert re.search(r"uptime \d+m \d+s", text), text
    assert all(r.startswith((base + "/", "blob:")) for r in state["resources"]), state
    assert any("/api/v1/camerasnapshots/" in r for r in state["resources"])


class RateRecord(FakeRecord):
    """A record that reports its bitrate."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "bitrate_bps": 2_500_000}


@needs_chromium
async def test_page_asks_for_the_token_once_and_sends_it(tmp_path: Path) -> None:
    directory = FakeDirectory([RateRecord(CAM, model="<b>TokenCam-7</b>", state="online")])
    server = ApiServer(build_app(directory, version="9.8.7", token=Secret(TOKEN)), "127.0.0.1", 0)
    await server.start()
    try:
        async with chromium(tmp_path, prompt_text=TOKEN) as browser:
            url = f"http://127.0.0.1:{server.port}/"
            state = await load_until(browser, url, "<b>TokenCam-7</b>", "9.8.7")
            bold = await browser.evaluate("document.querySelectorAll('#cameras b').length")
            stored = await browser.evaluate("sessionStorage.getItem('camera-agent-token')")
            # the refused first call is a network error in the log; nothing else is
            assert all("401" in e for e in browser.errors), browser.errors
            assert browser.prompts == 1
        assert stored == TOKEN
        assert bold == 0  # shown as text, never parsed as markup
        assert "online" in state["text"] and "2.50 Mbit/s" in state["text"]
    finally:
        await server.stop()


async def test_page_needs_no_token_but_the_api_does() -> None:
    app = build_app(FakeDirectory([FakeRecord(CAM)]), version="1.0", token=Secret(TOKEN))
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                html = await resp.text()
                headers = resp.headers
            async with http.get(f"{base}/api/v1/status") as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"{base}/api/v1/status", headers=auth) as resp:
                assert resp.status == 200
            async with http.post(f"{base}/") as resp:
                assert resp.status == 401  # only GET / is open
            async with http.get(f"{base}/", headers={"Host": "camera.example"}) as resp:
                assert resp.status == 200  # with a token, any Host may read the page
            script_or_style: dict[str, tuple[int, str, str]] = {}
            for name in ("console.js", "console.css"):
                async with http.get(f"{base}/console/{name}") as resp:
                    script_or_style[name] = (resp.status, resp.content_type, await resp.text())
            async with http.get(f"{base}/console/other.js") as resp:
                assert resp.status == 401  # only the console's own files are open
    finally:
        await server.stop()
    csp = [d.strip() for d in headers["Content-Security-Policy"].split(";")]
    assert csp[0] == "default-src 'none'"
    assert {"script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:"} <= set(csp)
    assert {"connect-src 'self'", "media-src 'self' blob:", "frame-ancestors 'none'"} <= set(csp)
    assert not any("unsafe" in d or "nonce" in d or "*" in d for d in csp), csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    # no inline script or style: the script and style sheet are the agent's own files
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/console/console.js" defer>']
    assert re.findall(r"<style|style=", html) == []
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        assert script_or_style[name][0] == 200  # without the token
        assert script_or_style[name][1] == kind
    assert ".innerHTML" not in script_or_style["console.js"][2]


async def test_page_without_token_is_served_to_loopback_hosts_only() -> None:
    server = ApiServer(build_app(FakeDirectory(), version="1.0"), "127.0.0.1", 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/", headers={"Host": "camera.example"}) as resp:
                assert resp.status == 403
            host = {"Host": "camera.example"}
            async with http.get(f"{base}/console/console.js", headers=host) as resp:
                assert resp.status == 403
            async with http.get(f"{base}/console/console.js") as resp:
                assert resp.status == 200
    finally:
        await server.stop()
