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


class OnvifNotAvailable(Unsupported):
    """The camera was added by its RTSP URL: it has no ONVIF service to control."""


class Refused(ProtocolError):
    """The camera refused a request with a SOAP fault of no more specific kind (for example
    `ter:Action/ActionFailed`): a permanent answer, not a reason to retry."""


class NotApplied(AgentError):
    """The camera accepted a write but does not hold the value afterwards: do not retry.

    `held` is what the camera holds instead, by the name of the value asked for.
    """

    def __init__(self, message: str, held: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.held: dict[str, object] = dict(held or {})


class SessionLimit(Unavailable):
    """A camera already holds as many RTSP sessions as it allows: a new consumer is refused
    instead of opening one more (cheap cameras fail for everyone past their limit)."""
