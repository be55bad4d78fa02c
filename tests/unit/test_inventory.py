"""Inventory rules without cameras: ids, merging, backoff schedule, persistence, secrets."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.camera.onvif import CameraDetails, DeviceInfo, StreamProfile
from agent.discovery import inventory as inventory_module
from agent.discovery import records
from agent.discovery.inventory import DOCUMENT, Inventory
from agent.discovery.mdns import HTTP_TYPE, RTSP_TYPE, MdnsService, onvif_candidates
from agent.discovery.records import CameraRecord, CameraState, camera_id, check_delay, retry_delay
from agent.discovery.session import Inspection
from agent.errors import InvalidArgument, NotFound
from agent.secret import Credentials
from agent.state import StateDir

PASSWORD = "s3cret-pw"


def details(serial: str, xaddr: str, manufacturer: str = "Acme") -> CameraDetails:
    return CameraDetails(
        xaddr=xaddr,
        info=DeviceInfo(manufacturer, "M1", "1.0", serial, "HW1"),
        profiles=(StreamProfile("main", "Main", "H264", 1920, 1080, 25.0, "rtsp://x/main"),),
        snapshot_uri="http://x/snap",
        ptz=True,
        imaging=False,
    )


Camera = Callable[[str], Inspection]


@pytest.fixture
def cameras(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake network: xaddr -> what inspecting it finds; records the credentials tried."""
    network: dict[str, Any] = {"tried": []}

    async def fake_inspect(
        xaddr: str, candidates: list[Credentials], timeout: float, **_: Any
    ) -> Inspection:
        network["tried"].append((xaddr, list(candidates)))
        found = network.get(xaddr)
        if found is None:
            return Inspection(CameraState.UNREACHABLE, "connection refused")
        if isinstance(found, Inspection):
            return found
        return Inspection(CameraState.ONLINE, "", found, candidates[0] if candidates else None)

    monkeypatch.setattr(inventory_module, "inspect", fake_inspect)
    return network


def test_camera_id_prefers_the_cameras_own_uuid() -> None:
    own = uuid.uuid4()
    assert camera_id(f"urn:uuid:{own}", "S1", "http://a/") == str(own)
    assert camera_id(f"URN:UUID:{own}", "", "") == str(own)
    by_serial = camera_id("", "S1", "http://a/onvif/device_service")
    assert by_serial == camera_id("", "S1", "http://b/onvif/device_service")
    assert by_serial != camera_id("", "S2", "http://a/onvif/device_service")
    assert camera_id("", "", "http://a/") != camera_id("", "", "http://b/")
    assert camera_id("urn:other:1", "S1", "http://a/") != by_serial
    assert str(uuid.UUID(camera_id("urn:uuid:not-a-uuid", "", ""))) != ""


def test_retry_delay_doubles_to_a_cap_with_bounded_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "RETRY_BASE", 1.0)
    monkeypatch.setattr(records, "RETRY_MAX", 10.0)
    monkeypatch.setattr(records, "JITTER", 0.0)
    assert [retry_delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry_delay(0) == 1.0
    assert retry_delay(10_000) == 10.0
    monkeypatch.setattr(records, "JITTER", 0.2)
    rng = random.Random(7)
    samples = [retry_delay(3, rng) for _ in range(200)]
    assert all(3.2 <= s <= 4.8 for s in samples)
    assert len(set(samples)) > 100  # really jittered


def test_check_delay_by_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "JITTER", 0.0)
    monkeypatch.setattr(records, "RETRY_BASE", 1.0)
    monkeypatch.setattr(records, "RETRY_MAX", 1000.0)
    assert check_delay(CameraState.ONLINE, 0, 60.0) == 60.0
    assert check_delay(CameraState.UNAUTHORIZED, 3, 60.0) == 60.0  # same answer if sooner
    assert check_delay(CameraState.NOT_ONVIF, 3, 60.0) == 60.0
    assert check_delay(CameraState.UNREACHABLE, 1, 60.0) == 1.0
    assert check_delay(CameraState.ERROR, 3, 60.0) == 4.0
    assert check_delay(CameraState.UNREACHABLE, 20, 60.0) == 60.0  # never longer than healthy


def test_record_json_never_holds_credentials() -> None:
    rec = CameraRecord(id=str(uuid.uuid4()), xaddr="http://10.0.0.5:80/onvif/device_service")
    rec.credentials = Credentials("admin", PASSWORD)
    rec.sources.add("wsd")
    public = rec.to_json()
    assert PASSWORD not in json.dumps(public) and "credentials" not in public
    assert PASSWORD not in repr(rec)
    assert set(public) == {
        "id", "address", "xaddr", "manufacturer", "model", "firmware_version", "serial_number",
        "hardware_id", "state", "reason", "profiles", "snapshot_uri", "ptz", "imaging",
        "backchannel", "endpoint_reference", "run_state", "last_seen", "sources", "kind", "name",
    }  # fmt: skip
    assert public["address"] == "10.0.0.5"
    stored = rec.to_state()
    assert stored["credentials"] == {"username": "admin", "password": PASSWORD}
    back = CameraRecord.from_state(json.loads(json.dumps(stored)))
    assert back.credentials == rec.credentials
    assert back.state is CameraState.UNREACHABLE  # stored states are not trusted


@pytest.mark.parametrize(
    "bad",
    [None, [], {"id": "x"}, {"id": "not-a-uuid", "xaddr": "http://a/"}, {"id": 5, "xaddr": 1}],
)
def test_record_from_bad_state_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        CameraRecord.from_state(bad)


def test_record_from_state_bounds_hostile_values() -> None:
    data = {
        "id": str(uuid.uuid4()),
        "xaddr": "http://a/onvif/device_service",
        "model": "m" * 100_000,
        "profiles": [{"token": str(i)} for i in range(1000)] + ["junk"],
        "addresses": [f"10.0.0.{i}" for i in range(100)],
        "sources": ["wsd", "evil"],
        "last_seen": True,
        "credentials": {"username": "u", "password": 5},
    }
    rec = CameraRecord.from_state(data)
    assert len(rec.model) == records.MAX_TEXT
    assert len(rec.profiles) == records.MAX_PROFILES
    assert len(rec.addresses) == records.MAX_ADDRESSES and rec.addresses[-1] == "10.0.0.99"
    assert rec.sources == {"wsd"} and rec.last_seen is None and rec.credentials is None


async def test_offer_merges_by_endpoint_reference_serial_and_address(
    cameras: dict[str, Any],
) -> None:
    a1 = "http://10.0.0.1:80/onvif/device_service"
    a2 = "http://10.0.0.2:80/onvif/device_service"
    epr = f"urn:uuid:{uuid.uuid4()}"
    cameras[a1] = details("SER1", a1)
    inv = Inventory(None)
    first = await inv.offer(a1, endpoint_reference=epr, source="wsd")
    assert first.id == epr[9:] and first.state is CameraState.ONLINE
    # The same camera again at a new address, by WS-Discovery: same record.
    cameras[a2] = details("SER1", a2)
    moved = await inv.offer(a2, endpoint_reference=epr, source="wsd")
    assert moved is first and moved.xaddr == a2 and moved.addresses == ["10.0.0.1", "10.0.0.2"]
    # Found by a probe (no endpoint reference) at yet another address: matched by serial.
    a3 = "http://10.0.0.3:8080/onvif/device_service"
    cameras[a3] = details("SER1", a3)
    assert await inv.offer(a3, source="probe") is first
    assert first.sources == {"wsd", "probe"}
    # Another camera that takes over an old address is a new record.
    cameras[a1] = details("SER2", a1)
    other = await inv.offer(a1, source="probe")
    assert other is not first and other.serial_number == "SER2"
    assert other.id == camera_id("", "SER2", a1)
    assert len(inv.cameras()) == 2
    # Same serial from another manufacturer is another camera.
    a4 = "http://10.0.0.4:80/onvif/device_service"
    cameras[a4] = details("SER1", a4, manufacturer="Other")
    assert await inv.offer(a4, source="probe") not in (first, other)
    await inv.close()


async def test_unidentified_record_is_folded_into_the_identified_one(
    cameras: dict[str, Any],
) -> None:
    xaddr = "http://10.0.0.9:80/onvif/device_service"
    cameras[xaddr] = Inspection(CameraState.UNAUTHORIZED, "credentials rejected")
    inv = Inventory(None)
    blind = await inv.offer(xaddr, source="probe")
    assert blind.state is CameraState.UNAUTHORIZED and blind.id == camera_id("", "", xaddr)
    epr = f"urn:uuid:{uuid.uuid4()}"
    cameras[xaddr] = details("SER9", xaddr)
    seen = await inv.offer(xaddr, endpoint_reference=epr, source="wsd")
    assert seen is blind  # matched by address, then identified: the id stays
    assert [c.id for c in inv.cameras()] == [blind.id]
    assert seen.serial_number == "SER9" and seen.endpoint_reference == epr
    await inv.close()


async def test_offers_of_one_address_share_one_inspection(cameras: dict[str, Any]) -> None:
    xaddr = "http://10.0.0.7:80/onvif/device_service"
    cameras[xaddr] = details("SER7", xaddr)
    inv = Inventory(None)
    found = await asyncio.gather(*(inv.offer(xaddr, source="probe") for _ in range(5)))
    assert len({id(r) for r in found}) == 1
    assert len(cameras["tried"]) == 1
    await inv.offer(xaddr, source="mdns")  # online and fresh: not inspected again
    assert len(cameras["tried"]) == 1 and found[0].sources == {"probe", "mdns"}
    await inv.close()


async def test_credentials_order_and_bad_arguments(cameras: dict[str, Any]) -> None:
    xaddr = "http://10.0.0.8:80/onvif/device_service"
    cameras[xaddr] = details("SER8", xaddr)
    default = Credentials("admin", "admin")
    by_host = Credentials("viewer", PASSWORD)
    inv = Inventory(None, default_credentials=[default], camera_credentials={"10.0.0.8": by_host})
    rec = await inv.offer(xaddr, source="probe")
    assert cameras["tried"][-1][1] == [by_host, default]
    explicit = Credentials("root", "other")
    inv.set_credentials(rec.id, explicit)
    assert rec.credentials == explicit and rec.next_check == 0.0
    assert inv._candidates(rec, xaddr)[:2] == [explicit, by_host]
    with pytest.raises(NotFound):
        inv.get("nope")
    with pytest.raises(NotFound):
        inv.set_credentials("nope", explicit)
    with pytest.raises(InvalidArgument):
        await inv.offer(xaddr, source="carrier-pigeon")
    with pytest.raises(InvalidArgument):
        await inv.offer("ftp://x/", source="probe")
    await inv.close()


async def test_gone_marks_unreachable_and_keeps_the_record(cameras: dict[str, Any]) -> None:
    xaddr = "http://10.0.0.6:80/onvif/device_service"
    epr = f"urn:uuid:{uuid.uuid4()}"
    cameras[xaddr] = details("SER6", xaddr)
    inv = Inventory(None)
    rec = await inv.offer(xaddr, endpoint_reference=epr, source="wsd")
    inv.gone(epr)
    inv.gone("urn:uuid:someone-else")
    assert rec.state is CameraState.UNREACHABLE and inv.get(rec.id) is rec
    assert rec.profiles  # details kept
    await inv.close()


async def test_persistence_round_trip(tmp_path: Path, cameras: dict[str, Any]) -> None:
    state = StateDir(tmp_path / "state")
    await asyncio.to_thread(state.ensure)
    xaddr = "http://10.0.0.5:80/onvif/device_service"
    cameras[xaddr] = details("SER5", xaddr)
    inv = Inventory(state, default_credentials=[Credentials("admin", PASSWORD)])
    rec = await inv.offer(xaddr, source="probe")
    await inv.close()
    path = state.file(DOCUMENT)
    assert path.stat().st_mode & 0o777 == 0o600
    assert PASSWORD in path.read_text()  # the state file is where credentials live
    again = Inventory(state)
    await again.load()
    (back,) = again.cameras()
    assert back.id == rec.id and back.serial_number == "SER5" and back.profiles == rec.profiles
    assert back.credentials == Credentials("admin", PASSWORD)
    assert back.state is CameraState.UNREACHABLE
    await again.close()


async def test_corrupt_or_unusable_state_starts_empty(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.file(DOCUMENT).write_text("{not json")
    inv = Inventory(state)
    await inv.load()
    assert inv.cameras() == []
    assert await asyncio.to_thread(lambda: list(tmp_path.glob(f"{DOCUMENT}.corrupt-*")))
    state.file(DOCUMENT).write_text(json.dumps(["a", "list"]))
    await inv.load()
    assert inv.cameras() == []
    assert await asyncio.to_thread(lambda: list(tmp_path.glob(f"{DOCUMENT}.unusable-*")))
    good = CameraRecord(id=str(uuid.uuid4()), xaddr="http://a/onvif/device_service").to_state()
    state.file(DOCUMENT).write_text(json.dumps({"cameras": [good, {"junk": 1}, 7]}))
    await inv.load()
    assert [c.id for c in inv.cameras()] == [good["id"]]


async def test_write_errors_are_logged_once_and_the_inventory_keeps_working(
    tmp_path: Path,
    cameras: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(inventory_module, "SAVE_INTERVAL", 0.0)
    state = StateDir(tmp_path)

    async def disk_full(name: str, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state, "awrite_json", disk_full)
    caplog.set_level(logging.DEBUG, logger="agent")
    inv = Inventory(state, default_credentials=[Credentials("admin", PASSWORD)])
    for i in range(4):
        xaddr = f"http://10.0.1.{i}:80/onvif/device_service"
        cameras[xaddr] = details(f"S{i}", xaddr)
        await inv.offer(xaddr, source="probe")
        await asyncio.sleep(0.01)
    await inv.close()
    assert len(inv.cameras()) == 4
    errors = [r for r in caplog.records if "cannot save" in r.getMessage()]
    assert len(errors) == 1 and "No space left" in errors[0].getMessage()
    assert PASSWORD not in caplog.text


def test_mdns_candidates() -> None:
    http = MdnsService(HTTP_TYPE, "cam._http._tcp.local.", ("10.0.0.5", "fe80::1"), 8080)
    assert onvif_candidates(http)[:2] == [("10.0.0.5", 8080), ("10.0.0.5", 80)]
    rtsp = MdnsService(
        RTSP_TYPE, "cam._rtsp._tcp.local.", ("10.0.0.6",), 554, {"onvif_port": "8000"}
    )
    assert onvif_candidates(rtsp) == [("10.0.0.6", 8000), ("10.0.0.6", 80)]
    bad = MdnsService(RTSP_TYPE, "x", ("10.0.0.7",), 554, {"http_port": "99999", "onvif": "x"})
    assert onvif_candidates(bad) == [("10.0.0.7", 80)]


def test_paused_is_kept_in_the_stored_record() -> None:
    rec = CameraRecord(id=str(uuid.uuid4()), xaddr="http://10.0.0.5:80/onvif/device_service")
    rec.paused = True
    again = CameraRecord.from_state(json.loads(json.dumps(rec.to_state())))
    assert again.paused
    assert again.to_json()["run_state"] == "paused"
