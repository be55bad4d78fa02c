"""URL helpers shared by every place that hands a camera URL to a client library, and the one
parser of camera addresses typed by people (`--probe`, the config's `[discovery] probe`)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, urlsplit, urlunsplit


def with_credentials(url: str, username: str, password: str) -> str:
    """`url` with `username:password@` in its authority (percent-encoded), replacing any."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


#: The ONVIF device service path (fixed by the ONVIF Core specification).
DEVICE_SERVICE_PATH = "/onvif/device_service"
#: Port of a camera address given without one (ONVIF over plain HTTP).
DEFAULT_ONVIF_PORT = 80
#: What a camera address may look like, for error messages.
ADDRESS_FORMS = "HOST[:PORT], [IPv6]:PORT or http://HOST[:PORT][/onvif/device_service]"

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_SHOWN = 80
_NO_CREDENTIALS = (
    "the address must not carry credentials: give them with --username/--password "
    "or in the config's [credentials] section"
)


def _shown(text: str) -> str:
    """`text` quoted for an error message: cut short, never shown if it may hold a password."""
    if "@" in text:
        return "the given address"
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")


def check_host(host: str) -> str:
    """`host` as a connectable name: a valid IPv4 or IPv6 address (brackets removed) or a DNS
    host name. ValueError saying what is wrong otherwise."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(f"{_shown(host)} is not a valid IPv6 address") from None
    if ":" in host:
        raise ValueError(f"write an IPv6 address in brackets: [{host[:_MAX_SHOWN]}]:PORT")
    if not host:
        raise ValueError("the host is empty")
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdecimal():  # a name never ends in a number: this is meant as IPv4
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(
                f"{host[:_MAX_SHOWN]} is not a valid IPv4 address (four numbers 0-255)"
            ) from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{_shown(host)} is not a valid host name or address")
    return host


def check_port(port: str) -> int:
    if not port.isdecimal() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, got {_shown(port)}")
    return int(port)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT (or HOST alone when `default_port` is given), both checked."""
    text = text.strip()
    if not text:
        raise ValueError("the address is empty")
    if "@" in text:
        raise ValueError(_NO_CREDENTIALS)
    if text.startswith("["):
        end = text.find("]")
        host, rest = (text[: end + 1], text[end + 1 :]) if end > 0 else (text, "")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{_shown(text)}: expected [IPv6]:PORT")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, None
    if port is not None:
        return check_host(host), check_port(port)
    if default_port is None:
        raise ValueError(f"expected HOST:PORT, got {_shown(text)}")
    return check_host(host), default_port


def parse_probe(text: str) -> tuple[str, int]:
    """(host, port) of a camera's ONVIF HTTP address, given as HOST, HOST:PORT, [IPv6]:PORT or
    an http:// URL (its path, if any, must be the device service's). ValueError says why not."""
    host, port = _probe_host_port(text.strip())
    if host in ("0.0.0.0", "::"):
        raise ValueError(f"{host} is not a camera address")
    return host, port


def _probe_host_port(text: str) -> tuple[str, int]:
    if "://" not in text:
        return split_host_port(text, DEFAULT_ONVIF_PORT)
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme == "https":
        raise ValueError(
            "https: the agent speaks ONVIF over plain HTTP; give http://HOST:PORT or HOST:PORT"
        )
    if scheme != "http":
        raise ValueError(f"expected {ADDRESS_FORMS}, got {_shown(text)}")
    authority, slash, path = rest.partition("/")
    path = slash + path
    if "@" in authority:
        raise ValueError(_NO_CREDENTIALS)
    if "?" in path or "#" in path or "?" in authority or "#" in authority:
        raise ValueError(f"{_shown(text)}: a camera address takes no query or fragment")
    if path.rstrip("/") not in ("", DEVICE_SERVICE_PATH):
        raise ValueError(
            f"{_shown(text)}: the ONVIF device service is at {DEVICE_SERVICE_PATH}; "
            "give http://HOST:PORT"
        )
    if not authority:
        raise ValueError(f"{_shown(text)} has no host")
    return split_host_port(authority, DEFAULT_ONVIF_PORT)
