"""Errors raised by reactive-services.

One hierarchy, rooted at :class:`ReactiveServicesError`::

    ReactiveServicesError
    ├── ConfigError                 bad configuration; names the offending key   (not retriable)
    ├── BrokerError                 anything the message broker reported
    │   ├── BrokerUnavailableError  cannot reach the broker / no answer in time   (retriable)
    │   ├── PublishError            the broker refused or did not ack a record    (retriable)
    │   ├── CommitError             an offset commit failed                       (retriable)
    │   └── RequestTimeoutError     no reply to a request within its timeout      (retriable)
    ├── DecodeError                 a record's bytes are not a valid value        (not retriable)
    ├── ValidationError             a decoded value has the wrong shape or types  (not retriable)
    ├── RemoteError                 a request's handler failed; the error reply   (not retriable)
    ├── AuthenticationError         bad credentials, or a token that is not valid (not retriable)
    ├── PermissionDeniedError       a valid token lacks a scope that is needed    (not retriable)
    ├── TooManyAttemptsError        too many failed logins; wait retry_after_s    (not retriable*)
    └── WebSocketError              a websocket connection failed
        └── ConnectionClosedError   closed with a code other than 1000 / 1001     (retriable)

Each class has a ``retriable`` class attribute; retry operators read it. Vendor
exceptions (aiokafka, websockets) are translated at the adapter boundary with
``raise ... from exc`` so the original stays available as ``__cause__``.

(*) :class:`TooManyAttemptsError` may succeed later, but only after ``retry_after_s``
seconds; a retry operator's own backoff would only spend more attempts, so it says
``retriable = False`` and leaves the wait to the caller (an HTTP gateway answers 429 with
``Retry-After``).

Across request-reply an error reaches the client as :class:`RemoteError` whose
``remote_type`` is the class name (``"AuthenticationError"``, ``"TooManyAttemptsError"``, ...)
and ``remote_message`` its ``str()``; :meth:`TooManyAttemptsError.from_remote` reads the
retry-after back from such a message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = [
    "AuthenticationError",
    "BrokerError",
    "BrokerUnavailableError",
    "CommitError",
    "ConfigError",
    "ConnectionClosedError",
    "DecodeError",
    "PermissionDeniedError",
    "PublishError",
    "ReactiveServicesError",
    "RemoteError",
    "RequestTimeoutError",
    "TooManyAttemptsError",
    "ValidationError",
    "WebSocketError",
]


class ReactiveServicesError(Exception):
    """Base class of every error this library raises on purpose."""

    retriable: bool = False


class ConfigError(ReactiveServicesError, ValueError):
    """A configuration value is missing or invalid.

    Attributes:
        key: the name of the offending setting (e.g. ``"bootstrap_servers"``).
        message: what is wrong with it (``str()`` of the error is ``"key: message"``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class BrokerError(ReactiveServicesError):
    """The message broker reported a failure."""


class BrokerUnavailableError(BrokerError):
    """The broker cannot be reached, or did not answer within the timeout."""

    retriable = True


class PublishError(BrokerError):
    """A record was not acknowledged by the broker (refused, or timed out)."""

    retriable = True


class CommitError(BrokerError):
    """Committing consumer offsets failed."""

    retriable = True


class RequestTimeoutError(BrokerError):
    """No reply to a request (``ClientProxy.send``) arrived within its timeout.

    Attributes:
        pattern: the request pattern (without namespace).
        timeout: the timeout that ran out, in seconds.
    """

    retriable = True

    def __init__(self, pattern: str, timeout: float) -> None:
        super().__init__(f"no reply to {pattern!r} within {timeout:g} s")
        self.pattern = pattern
        self.timeout = timeout


class RemoteError(ReactiveServicesError):
    """The handler of a request raised; this is its error reply, raised on the client.

    Attributes:
        remote_type: the class name of the exception raised by the remote handler
            (e.g. ``"ValidationError"``).
        remote_message: ``str()`` of that exception.
    """

    def __init__(self, remote_type: str, remote_message: str) -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message


class AuthenticationError(ReactiveServicesError):
    """Who is calling could not be established: wrong credentials, or a token that is
    missing, malformed, badly signed, expired, not yet valid, or for another issuer or audience.

    The message is a short reason (``"token expired"``, ``"invalid username or password"``);
    it never contains the token or the password. An HTTP gateway answers 401.

    Attributes:
        reason: the same short reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermissionDeniedError(ReactiveServicesError):
    """The caller is authenticated but its token lacks a scope the operation needs.

    An HTTP gateway answers 403.

    Attributes:
        missing: the scopes that were needed and not granted, sorted.
    """

    def __init__(self, missing: Iterable[str], message: str | None = None) -> None:
        self.missing = tuple(sorted(missing))
        super().__init__(message or f"missing scope: {' '.join(self.missing)}")


class TooManyAttemptsError(ReactiveServicesError):
    """Too many failed attempts (e.g. logins for one username); refused without checking.

    The message is ``"too many failed attempts; retry after <n> s"`` (``n`` an integer >= 1),
    so that it survives request-reply, where only the class name and the message cross
    (:class:`RemoteError`); :meth:`from_remote` reads it back. An HTTP gateway answers 429
    with ``Retry-After: <n>``.

    Attributes:
        retry_after_s: whole seconds (>= 1) after which an attempt is admitted again.
    """

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(f"too many failed attempts; retry after {self.retry_after_s} s")

    @classmethod
    def from_remote(cls, error: BaseException) -> TooManyAttemptsError | None:
        """The :class:`TooManyAttemptsError` carried by ``error``, or None.

        ``error`` may be a :class:`TooManyAttemptsError` (returned as is) or a
        :class:`RemoteError` whose ``remote_type`` is ``"TooManyAttemptsError"`` (its
        ``retry_after_s`` is read from the message; 1 if the message has no number).
        """
        if isinstance(error, TooManyAttemptsError):
            return error
        if isinstance(error, RemoteError) and error.remote_type == cls.__name__:
            found = re.search(r"retry after (\d+) s", error.remote_message)
            return cls(int(found.group(1)) if found else 1)
        return None


class DecodeError(ReactiveServicesError, ValueError):
    """A record's bytes could not be decoded (e.g. not JSON)."""


class ValidationError(ReactiveServicesError, ValueError):
    """A decoded value does not have the expected shape or types.

    Attributes:
        fields: the paths of the fields that failed (``"items.0.qty"``; ``"(root)"`` for the
            value itself), in order; empty when the check that raised names none.
    """

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class WebSocketError(ReactiveServicesError):
    """A websocket connection failed."""


class ConnectionClosedError(WebSocketError):
    """The peer closed the websocket with a code other than 1000 or 1001.

    Attributes:
        code: the close code received (1006 when the connection dropped without one).
        reason: the close reason text, possibly empty.
    """

    retriable = True

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"websocket closed with code {code}: {reason or 'no reason'}")
        self.code = code
        self.reason = reason
