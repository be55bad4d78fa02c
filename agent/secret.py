"""A string that never shows itself by accident (repr, str, f-strings, logs, JSON), and `mask`,
which takes secrets out of free text (log lines, error messages, audit arguments).

Every `Secret` registers its value in a process-wide, bounded registry; `mask` replaces any
registered value found in a text with `***`, and also what is a secret by its place: the
user:password part of any URL, password-like query parameters, SOAP/XML password elements and
quoted "password": "..." pairs (a library's debug dump of a request it sends).
"""

from __future__ import annotations

import hmac
import re
import threading
from typing import Any
from urllib.parse import quote

MASK = "***"
#: Shortest value masked wherever it occurs: shorter ones would mangle ordinary words.
MIN_MASKED = 4
#: Values remembered for masking; past this the least recently registered are forgotten.
MAX_KNOWN = 1024

# scheme://user:password@ (any scheme): the authority runs to the first / ? # or blank, and its
# user part to its last @, as urllib.parse splits it.
_USERINFO = re.compile(r"""(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#'"<>\\]+@""")
# The same URL percent-encoded (a URL carried in another URL's query): %3A%2F%2Fuser%3Apw%40.
_USERINFO_ENCODED = re.compile(r"""(?i)(%3A%2F%2F)(?:(?!%2F|%3F|%23|%40)[^\s/?#&'"<>])+%40""")
# A word that any of the patterns below needs: text without one is not searched further.
_HINT = re.compile(r"(?i)pass|pwd|secret|psk|key|token|auth|sig|cred")
# Credentials in a query string: ?password=...&token=... (names ending in a secret word).
_QUERY_SECRET = re.compile(
    r"""(?i)([?&;][a-z0-9_.\-]*(?:password|passwd|pwd|pass|passphrase|psk|token|secret|key"""
    r"""|auth|signature|credentials?)=)[^&#\s'"<>]+"""
)
# Credentials in an RTSP path, as XMeye/NetSurveillance firmwares write them:
# /user=admin_password=SECRET_channel=1_stream=0.sdp (the value ends at the next field).
_PATH_SECRET = re.compile(
    r"""(?i)([/_](?:password|passwd|pwd)=)[^\s/?#&'"<>]*?(?=_channel=|_stream=|\.sdp\b|[/?#&\s'"<>]|$)"""
)
# The text of an XML element named like a password (<tt:Password>, <wsse:Password Type=..>).
_XML_SECRET = re.compile(
    r"(?i)(<(?:[\w.\-]+:)?(?:password|passphrase|psk|presharedkey|secret|key)\b[^<>]*>)[^<]+(?=</)"
)
# A quoted value under a quoted key named like a secret: "password": "...", 'api_key': '...'.
_QUOTED_SECRET = re.compile(
    r"""(?i)(["'][\w.\-]*(?:password|passwd|passphrase|secret|psk|apikey|api_key|token)["']"""
    r"""\s*[:=]\s*)(["'])(?:(?!\2)[^\\]|\\.)*\2"""
)

_lock = threading.Lock()
_known: dict[str, None] = {}  # insertion order: oldest first
_by_length: tuple[str, ...] = ()  # the same values, longest first (replaced, never mutated)


def register(value: str) -> None:
    """Remember `value` (and its percent-encoded form) so that `mask` hides it."""
    if len(value) < MIN_MASKED:
        return
    global _by_length
    forms = dict.fromkeys((value, quote(value, safe="")))
    with _lock:
        added = False
        for form in forms:
            if form in _known:
                del _known[form]  # most recently used last
            else:
                added = True
            _known[form] = None
        while len(_known) > MAX_KNOWN:
            del _known[next(iter(_known))]
            added = True
        if added:
            _by_length = tuple(sorted(_known, key=len, reverse=True))


def known_count() -> int:
    """How many values `mask` hides."""
    return len(_by_length)


def mask(text: str) -> str:
    """`text` with user:password in URLs (also percent-encoded), credentials in query strings,
    XML password elements, quoted password values and every registered secret value replaced
    by `***`. Text without '@', without a secret-like word and without a registered value is
    returned as it is after a few substring searches."""
    if "@" in text or "%40" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
        text = _USERINFO_ENCODED.sub(rf"\1{MASK}%40", text)
    if _HINT.search(text):
        if "=" in text:
            text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
            text = _PATH_SECRET.sub(rf"\1{MASK}", text)
        if "<" in text:
            text = _XML_SECRET.sub(rf"\1{MASK}", text)
        if '"' in text or "'" in text:
            text = _QUOTED_SECRET.sub(rf"\1\2{MASK}\2", text)
    for value in _by_length:
        if value in text:
            text = text.replace(value, MASK)
    return text


class Secret:
    """Wraps a password, token or key. Use `.reveal()` only where the value must be sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled; store it through agent.state")


class Credentials:
    """A user name and its password; the password is a Secret."""

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: Secret | str) -> None:
        self.username = username
        self.password = password if isinstance(password, Secret) else Secret(password)

    def __repr__(self) -> str:
        return f"Credentials({self.username!r}, {MASK})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return self.username == other.username and self.password == other.password

    def __hash__(self) -> int:
        return hash((self.username, self.password))
