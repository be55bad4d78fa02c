"""Fetch a camera's JPEG snapshot over HTTP with Digest or Basic authentication."""

from __future__ import annotations

import time

import aiohttp
from yarl import URL

from agent.camera.models import Snapshot
from agent.errors import AuthError, ProtocolError, Unavailable
from agent.proto.httpauth import basic_authorization, digest_authorization, parse_challenges
from agent.secret import Credentials

#: Largest snapshot accepted, bytes.
MAX_SNAPSHOT = 8 * 1024 * 1024
#: Content types accepted as a JPEG picture.
JPEG_TYPES = ("image/jpeg", "image/jpg", "image/pjpeg")


def _authorization(challenges: list[str], cred: Credentials, method: str, uri: str) -> str:
    offered = parse_challenges(challenges)
    password = cred.password.reveal()
    for scheme, params in offered:
        if scheme.lower() == "digest":
            return digest_authorization(cred.username, password, method, uri, params)
    if any(scheme.lower() == "basic" for scheme, _ in offered):
        return basic_authorization(cred.username, password)
    raise AuthError("snapshot: the camera offers neither Digest nor Basic authentication")


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_SNAPSHOT:
        raise ProtocolError(f"snapshot larger than {MAX_SNAPSHOT} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > MAX_SNAPSHOT:
            raise ProtocolError(f"snapshot larger than {MAX_SNAPSHOT} bytes")
    return bytes(buf)


async def fetch(uri: str, cred: Credentials | None, timeout: float) -> Snapshot:
    """GET `uri`, answering one Digest/Basic challenge; a JPEG of at most MAX_SNAPSHOT."""
    url = URL(uri)
    target = url.raw_path_qs
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as http:
            headers: dict[str, str] = {}
            for _attempt in range(2):
                async with http.get(url, headers=headers, allow_redirects=False) as resp:
                    if resp.status == 401 and not headers and cred is not None:
                        challenges = resp.headers.getall("WWW-Authenticate", [])
                        headers = {"Authorization": _authorization(challenges, cred, "GET", target)}
                        continue
                    if resp.status in (401, 403):
                        raise AuthError(
                            f"snapshot: camera rejected the credentials (HTTP {resp.status})"
                        )
                    if resp.status != 200:
                        raise Unavailable(f"snapshot: HTTP {resp.status}")
                    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if ctype not in JPEG_TYPES:
                        raise ProtocolError(
                            f"snapshot: expected a JPEG, got {ctype or 'no type'!r}"
                        )
                    data = await _read(resp)
                    if not data.startswith(b"\xff\xd8"):
                        raise ProtocolError("snapshot: the body is not a JPEG")
                    return Snapshot(jpeg=data, timestamp=time.time(), content_type="image/jpeg")
    except TimeoutError as exc:
        raise Unavailable("snapshot: timed out") from exc
    except aiohttp.ClientError as exc:
        raise Unavailable(f"snapshot: {type(exc).__name__}: {exc}") from exc
    raise AuthError("snapshot: camera rejected the credentials")
