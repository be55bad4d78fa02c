"""HTTP Digest (RFC 7616, RFC 2617/2069 compatible) and Basic (RFC 7617) authentication.

Transport-neutral: used by RTSP and HTTP servers alike, and by clients to build headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.errors import ProtocolError

MAX_HEADER = 4096
MAX_PARAMS = 32
MAX_NONCES = 4096

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(_TCHARS)
_PARAM = re.compile(rf'({_TCHARS})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|({_TCHARS}))')
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
_ESCAPE = re.compile(r"\\(.)")


def _hash(algorithm: str, *parts: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    return _HASHES[base](":".join(parts).encode())


def parse_challenges(values: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Parse `WWW-Authenticate`/`Authorization` values into (scheme, params) pairs.

    One value may hold several challenges; a token68 (Basic credentials) becomes param "token".
    """
    out: list[tuple[str, dict[str, str]]] = []
    for value in values:
        if len(value) > MAX_HEADER:
            raise ProtocolError(f"authentication header longer than {MAX_HEADER} bytes")
        pos = 0
        while True:
            while pos < len(value) and value[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(value):
                break
            param = _PARAM.match(value, pos)
            if param is not None and out:
                params = out[-1][1]
                if len(params) >= MAX_PARAMS:
                    raise ProtocolError(f"more than {MAX_PARAMS} authentication parameters")
                name, quoted, plain = param.groups()
                params[name.lower()] = plain if quoted is None else _ESCAPE.sub(r"\1", quoted)
                pos = param.end()
                continue
            scheme = _SCHEME.match(value, pos)
            if scheme is None:
                raise ProtocolError(f"malformed authentication header near {value[pos:][:20]!r}")
            out.append((scheme.group(), {}))
            pos = scheme.end()
            while value[pos : pos + 1] in (" ", "\t"):
                pos += 1
            token = _TOKEN68.match(value, pos)
            if token is not None and _PARAM.match(value, pos) is None:
                out[-1][1]["token"] = token.group()
                pos = token.end()
    return out


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_response(
    *,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The `response` value of a Digest exchange (qop absent or "auth")."""
    if algorithm.upper().removesuffix("-SESS") not in _HASHES:
        raise ProtocolError(f"unsupported digest algorithm {algorithm[:20]!r}")
    ha1 = _hash(algorithm, username, realm, password)
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, ha1, nonce, cnonce or "")
    ha2 = _hash(algorithm, method, uri)
    if qop is None:
        return _hash(algorithm, ha1, nonce, ha2)
    return _hash(algorithm, ha1, nonce, nc or "", cnonce or "", qop, ha2)


def digest_authorization(
    username: str,
    password: str,
    method: str,
    uri: str,
    challenge: str | Mapping[str, str],
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Build a Digest `Authorization` value answering `challenge` (header value or params)."""
    if isinstance(challenge, str):
        found = [p for s, p in parse_challenges([challenge]) if s.lower() == "digest"]
        if not found:
            raise ProtocolError("no Digest challenge")
        challenge = found[0]
    realm = challenge.get("realm", "")
    nonce = challenge.get("nonce", "")
    algorithm = challenge.get("algorithm", "MD5")
    offered = [q.strip() for q in challenge.get("qop", "").split(",")]
    qop = "auth" if "auth" in offered else None
    nc_text = f"{nc:08x}"
    cnonce = cnonce or secrets.token_hex(8)
    response = digest_response(
        username=username,
        password=password,
        realm=realm,
        method=method,
        uri=uri,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"algorithm={algorithm}",
        f"response={_quote(response)}",
    ]
    if "opaque" in challenge:
        parts.append(f"opaque={_quote(challenge['opaque'])}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    return "Digest " + ", ".join(parts)


def basic_authorization(username: str, password: str) -> str:
    """Build a Basic `Authorization` value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of a check: the user name when accepted; `stale` asks for a fresh nonce."""

    username: str | None
    stale: bool = False


_REJECT = AuthResult(None)


class HttpAuthenticator:
    """Server side: issues challenges and checks `Authorization` values."""

    def __init__(
        self,
        realm: str,
        lookup: Callable[[str], str | None],
        *,
        allow_basic: bool = True,
        nonce_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        algorithms: tuple[str, ...] = ("MD5",),
        max_nonces: int = MAX_NONCES,
    ) -> None:
        self.realm = realm
        self._lookup = lookup
        self._allow_basic = allow_basic
        self._ttl = nonce_ttl
        self._clock = clock
        self._algorithms = algorithms
        self._secret = secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        # Issued nonces -> highest nonce count seen (0 = unused); oldest evicted first.
        self._nonces: OrderedDict[str, int] = OrderedDict()
        self._max_nonces = max_nonces

    def challenge(self, *, stale: bool = False) -> list[str]:
        """`WWW-Authenticate` values: one Digest challenge per algorithm, then Basic."""
        out = []
        for algorithm in self._algorithms:
            nonce = self._new_nonce()
            value = (
                f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
                f'algorithm={algorithm}, qop="auth", opaque={_quote(self._opaque)}'
            )
            out.append(value + (", stale=true" if stale else ""))
        if self._allow_basic:
            out.append(f"Basic realm={_quote(self.realm)}")
        return out

    def check(self, method: str, uri: str, authorization: str | None) -> str | None:
        """The authenticated user name, or None."""
        return self.verify(method, uri, authorization).username

    def verify(self, method: str, uri: str, authorization: str | None) -> AuthResult:
        """Like `check`, and says whether a correct answer only used an expired nonce."""
        if not authorization or len(authorization) > MAX_HEADER:
            return _REJECT
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            return self._verify_basic(rest.strip())
        if scheme.lower() != "digest":
            return _REJECT
        try:
            found = parse_challenges([authorization])
        except ProtocolError:
            return _REJECT
        return self._verify_digest(method, uri, found[0][1]) if found else _REJECT

    def _verify_basic(self, token: str) -> AuthResult:
        if not self._allow_basic:
            return _REJECT
        try:
            username, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except ValueError:
            return _REJECT
        expected = self._lookup(username) if sep else None
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            return _REJECT
        return AuthResult(username)

    def _verify_digest(self, method: str, uri: str, params: dict[str, str]) -> AuthResult:
        username = params.get("username")
        nonce = params.get("nonce", "")
        algorithm = params.get("algorithm", "MD5")
        qop = params.get("qop")
        if (
            username is None
            or params.get("realm") != self.realm
            or algorithm.upper().removesuffix("-SESS") not in _HASHES
            or qop not in (None, "auth")
            or not _same_resource(params.get("uri", ""), uri)
        ):
            return _REJECT
        password = self._lookup(username)
        if password is None:
            return _REJECT
        expected = digest_response(
            username=username,
            password=password,
            realm=self.realm,
            method=method,
            uri=params.get("uri", ""),
            nonce=nonce,
            algorithm=algorithm,
            qop=qop,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
        answer = params.get("response", "").lower().encode()  # bytes: any text compares
        if not hmac.compare_digest(expected.encode(), answer):
            return _REJECT
        if not self._nonce_fresh(nonce):
            return AuthResult(None, stale=True)
        if qop is not None:
            nc_text = params.get("nc", "")
            if not re.fullmatch(r"[0-9a-fA-F]{1,8}", nc_text):
                return _REJECT
            nc = int(nc_text, 16)
            if nc <= self._nonces[nonce]:
                return _REJECT  # replayed or reordered nonce count
            self._nonces[nonce] = nc
        return AuthResult(username)

    def _new_nonce(self) -> str:
        stamp = struct.pack("!d", self._clock()) + secrets.token_bytes(8)
        mac = hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16]
        nonce = base64.urlsafe_b64encode(stamp + mac).decode()
        self._nonces[nonce] = 0
        while len(self._nonces) > self._max_nonces:
            self._nonces.popitem(last=False)
        return nonce

    def _nonce_fresh(self, nonce: str) -> bool:
        """True for a nonce we issued (MAC valid), still tracked and younger than the TTL."""
        if nonce not in self._nonces:
            return False
        raw = base64.urlsafe_b64decode(nonce)
        mac = hmac.new(self._secret, raw[:16], hashlib.sha256).digest()[:16]
        age = self._clock() - struct.unpack("!d", raw[:8])[0]
        if not hmac.compare_digest(mac, raw[16:]) or not 0 <= age <= self._ttl:
            del self._nonces[nonce]
            return False
        self._nonces.move_to_end(nonce)
        return True


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """The digest `uri` names the request target (absolute or path form)."""
    if digest_uri == request_uri:
        return True
    return _path(digest_uri) == _path(request_uri)


def _path(uri: str) -> str:
    if "://" in uri:
        uri = uri.split("://", 1)[1]
        uri = uri[uri.find("/") :] if "/" in uri else "/"
    return uri.rstrip("/") or "/"
