"""reactive-services: reactive, event-driven microservices on Kafka and websockets.

Kafka topics and websocket connections are ReactiveX Observables (``adapters``); services
are operator pipelines (``operators`` plus reactivex's own) declared NestJS-style with
``@event_pattern`` / ``@message_pattern`` and run by :class:`Microservice`; :class:`ClientProxy`
emits events and sends requests (``send``: request-reply over the broker).
"""

from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from ._runtime import (
        ClientProxy,
        Controller,
        EventPatternSpec,
        MessagePatternSpec,
        Microservice,
        ReplyObservable,
        event_pattern,
        message_pattern,
        start_all_microservices,
    )

__version__ = "0.1.0"

__all__ = [
    "ClientProxy",
    "Controller",
    "EventPatternSpec",
    "MessagePatternSpec",
    "Microservice",
    "ReplyObservable",
    "errors",
    "event_pattern",
    "message_pattern",
    "start_all_microservices",
]


def __getattr__(name: str) -> Any:
    # The runtime is imported on first use, so that ``reactive_services.errors`` can be
    # imported by the adapters without importing the runtime (which imports the adapters).
    if name in __all__ and name != "errors":
        from . import _runtime

        return getattr(_runtime, name)
    raise AttributeError(f"module 'reactive_services' has no attribute {name!r}")
