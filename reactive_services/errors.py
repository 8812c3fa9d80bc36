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
    └── WebSocketError              a websocket connection failed
        └── ConnectionClosedError   closed with a code other than 1000 / 1001     (retriable)

Each class has a ``retriable`` class attribute; retry operators read it. Vendor
exceptions (aiokafka, websockets) are translated at the adapter boundary with
``raise ... from exc`` so the original stays available as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailableError",
    "CommitError",
    "ConfigError",
    "ConnectionClosedError",
    "DecodeError",
    "PublishError",
    "ReactiveServicesError",
    "RemoteError",
    "RequestTimeoutError",
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
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


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


class DecodeError(ReactiveServicesError, ValueError):
    """A record's bytes could not be decoded (e.g. not JSON)."""


class ValidationError(ReactiveServicesError, ValueError):
    """A decoded value does not have the expected shape or types."""


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
