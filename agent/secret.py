"""A string that never shows itself by accident (repr, str, f-strings, logs, JSON)."""

from __future__ import annotations

import hmac
from typing import Any

MASK = "***"


class Secret:
    """Wraps a password, token or key. Use `.reveal()` only where the value must be sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

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
