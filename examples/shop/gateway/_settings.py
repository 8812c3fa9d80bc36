"""The gateway's limits and timeouts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reactive_services.errors import ConfigError


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's limits (topics and their namespace are the :class:`ClientProxy`'s business).

    Args:
        call_timeout_s: seconds each request-reply call may take (> 0; default 2.0); past it
            the route answers 504 (``GET /orders/{id}``: the part is *missing*).
        login_timeout_s: seconds ``auth.login`` may take (> 0; default 5.0): the auth service
            hashes the password (argon2) and delays failed attempts (up to 2 s by default) on
            purpose, so a login gets longer than other calls.
        max_body_bytes: the largest request body accepted, bytes (>= 1; default 65536); over
            it: 413.
        readiness_timeout_s: seconds ``/readyz`` waits for ``readiness()`` (> 0; default 2.0).

    Raises:
        ConfigError: a value out of range (``key`` names it).
    """

    call_timeout_s: float = 2.0
    login_timeout_s: float = 5.0
    max_body_bytes: int = 65536
    readiness_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for key in ("call_timeout_s", "login_timeout_s", "readiness_timeout_s"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > 0 and math.isfinite(value))
            ):
                raise ConfigError(key, f"must be a number of seconds > 0, got {value!r}")
        value = self.max_body_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("max_body_bytes", f"must be an integer >= 1 (bytes), got {value!r}")
