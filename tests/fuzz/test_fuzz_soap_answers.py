"""Fuzz the SOAP answers the agent parses itself (UpgradeSystemFirmware's answer and faults)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.camera.firmware_soap import check_answer
from agent.errors import AgentError
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("SOAP answers (agent-parsed)")

_ENV = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope '
    b'xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    b'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:ter="http://www.onvif.org/ver10/error">'
    b"<s:Header/><s:Body>%s</s:Body></s:Envelope>"
)
SEEDS = [
    _ENV % b"<tds:UpgradeSystemFirmwareResponse><tds:Message>Upgrading</tds:Message>"
    b"</tds:UpgradeSystemFirmwareResponse>",
    _ENV % b"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>ter:Action"
    b"</s:Value><s:Subcode><s:Value>ter:InvalidFirmware</s:Value></s:Subcode></s:Subcode>"
    b'</s:Code><s:Reason><s:Text xml:lang="en">Invalid firmware</s:Text></s:Reason></s:Fault>',
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
    b"<SOAP-ENV:Fault><faultcode>SOAP-ENV:Client</faultcode><faultstring>NotAuthorized"
    b"</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>",
]


@COUNT.fuzzes
def _check(status: int, body: bytes) -> None:
    with contextlib.suppress(AgentError):  # AuthError, Unavailable, ProtocolError, a fault
        check_answer(status, body)


@fuzz_settings(1500)
@given(st.sampled_from([200, 400, 401, 500]), mutated(SEEDS))
def test_mutated_answers(status: int, body: bytes) -> None:
    _check(status, body)


@fuzz_settings(800)
@given(st.integers(100, 599), st.binary(max_size=300))
def test_random_bytes(status: int, body: bytes) -> None:
    _check(status, body)


@fuzz_settings(60)
@given(st.integers(1, 20_000))
def test_deep_and_entities(n: int) -> None:
    _check(200, _ENV % (b"<a>" * n))
    _check(500, b"<!DOCTYPE x [<!ENTITY a '" + b"x" * n + b"'>]><x>&a;&a;</x>")
    _check(
        500, _ENV % (b"<s:Fault><s:Code>" + b"<s:Subcode><s:Value>x</s:Value>" * n + b"</s:Code>")
    )


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
