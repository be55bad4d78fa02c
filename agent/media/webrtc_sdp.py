"""Checks on a viewer's SDP offer and the ICE addresses a peer connection may use.

`check_offer` enforces size limits, requires H.264 (packetization-mode=1) video and drops
remote ICE candidates that are not IP literals on loopback or a private network (no mDNS
lookups, nothing routed to the internet). `ice_host_addresses` restricts the host candidates
aioice gathers in the current context.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import aioice.ice
import ifaddr
from aiortc.sdp import SessionDescription

from agent.errors import InvalidArgument, LimitExceeded

MAX_SDP_BYTES = 64 * 1024
MAX_SDP_LINES = 2000
MAX_SDP_LINE = 4096
MAX_MEDIA_SECTIONS = 8
MAX_CANDIDATES = 64

_ICE_ADDRESSES: ContextVar[tuple[str, ...] | None] = ContextVar("ice_addresses", default=None)
_original_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    allowed = _ICE_ADDRESSES.get()
    if allowed is None:
        return _original_host_addresses(use_ipv4, use_ipv6)
    return [
        a
        for a in allowed
        if (use_ipv4 and ipaddress.ip_address(a).version == 4)
        or (use_ipv6 and ipaddress.ip_address(a).version == 6)
    ]


aioice.ice.get_host_addresses = _host_addresses


def lan_addresses() -> tuple[str, ...]:
    """This host's private (LAN) unicast addresses, the default for host candidates."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                text = ip.ip
            elif ip.ip[2] == 0:  # IPv6 without scope id (not link-local)
                text = ip.ip[0]
            else:
                continue
            addr = ipaddress.ip_address(text)
            if addr.is_private and not addr.is_loopback and not addr.is_link_local:
                out.append(text)
    return tuple(out)


@contextlib.contextmanager
def ice_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block, aioice gathers host candidates on `addresses` only."""
    for a in addresses:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise InvalidArgument(f"not an IP address: {a!r}") from None
    token = _ICE_ADDRESSES.set(tuple(addresses))
    try:
        yield
    finally:
        _ICE_ADDRESSES.reset(token)


def candidate_allowed(line: str) -> bool:
    """True for an `a=candidate:` line whose address is a loopback or private IP literal."""
    fields = line.split()
    if len(fields) < 8 or fields[2].lower() != "udp":
        return False
    try:
        addr = ipaddress.ip_address(fields[4])
    except ValueError:
        return False  # hostname / mDNS name: would need a lookup
    return (addr.is_loopback or addr.is_private) and not (addr.is_unspecified or addr.is_multicast)


def check_offer(offer_sdp: object) -> str:
    """Validate an offer and return it with disallowed candidates removed.

    Raises LimitExceeded for oversized input and InvalidArgument for anything malformed or
    without H.264 video.
    """
    if not isinstance(offer_sdp, str):
        raise InvalidArgument("SDP offer must be text")
    if len(offer_sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise LimitExceeded(f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    lines = offer_sdp.splitlines()
    if len(lines) > MAX_SDP_LINES:
        raise LimitExceeded(f"SDP offer has more than {MAX_SDP_LINES} lines")
    if not lines or lines[0].strip() != "v=0":
        raise InvalidArgument("SDP offer must start with v=0")
    kept: list[str] = []
    candidates = 0
    for line in lines:
        if len(line) > MAX_SDP_LINE:
            raise LimitExceeded(f"SDP line longer than {MAX_SDP_LINE} characters")
        if not line.isprintable():
            raise InvalidArgument("SDP offer contains control characters")
        if line.startswith("a=candidate:"):
            candidates += 1
            if candidates > MAX_CANDIDATES:
                raise LimitExceeded(f"SDP offer has more than {MAX_CANDIDATES} candidates")
            if not candidate_allowed(line):
                continue
        kept.append(line)
    text = "\r\n".join(kept) + "\r\n"
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # the parser raises whatever the malformed line provokes
        raise InvalidArgument(f"malformed SDP offer: {type(exc).__name__}") from None
    if len(parsed.media) > MAX_MEDIA_SECTIONS:
        raise LimitExceeded(f"SDP offer has more than {MAX_MEDIA_SECTIONS} media sections")
    video = [m for m in parsed.media if m.kind == "video"]
    if not video:
        raise InvalidArgument("SDP offer has no video section")
    if not any(
        c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode")) == "1"
        for m in video
        for c in m.rtp.codecs
    ):
        raise InvalidArgument("SDP offer has no H.264 (packetization-mode=1) video codec")
    if not any(m.ice and m.ice.usernameFragment and m.ice.password for m in parsed.media):
        raise InvalidArgument("SDP offer lacks ICE credentials")
    return text
