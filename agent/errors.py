"""The error hierarchy, grouped by how a caller reacts.

Protocol cores raise these (never log); services catch them, log and decide.
Foreign exceptions (zeep, aiohttp, av) are mapped to these once, at the boundary.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ProtocolError(AgentError, ValueError):
    """The peer sent something malformed: reject it, keep serving others."""


class LimitExceeded(ProtocolError):
    """Input larger than we accept (body, header, line, frame)."""


class AuthError(AgentError):
    """Credentials missing or wrong: report, do not retry with the same ones."""


class NotFound(AgentError, LookupError):
    """The named thing (camera, stream, profile, token) does not exist."""


class InvalidArgument(AgentError, ValueError):
    """A request was well formed but a value is out of range or unsupported."""


class Unavailable(AgentError, ConnectionError):
    """A peer or resource is down right now: retry later with backoff."""


class ConfigError(AgentError):
    """Configuration is invalid: fail fast at start-up with the reason."""


class NotConfigured(AuthError):
    """No credentials are known for the camera: configure them, then retry."""


class Unsupported(AgentError):
    """The camera (or peer) does not offer this feature: do not retry."""
