"""reactive-services: reactive, event-driven microservices on Kafka and websockets.

Kafka topics and websocket connections are ReactiveX Observables
(:mod:`reactive_services.adapters`); services are operator pipelines
(:mod:`reactive_services.operators` plus reactivex's own) declared NestJS-style with
``@event_pattern`` / ``@message_pattern`` and run by :class:`Microservice`; :class:`ClientProxy`
emits events and sends requests (``send``: request-reply over the broker).

This module is the facade (as httpx's ``__init__`` is): the names a user needs, re-exported
from the layers below it. The layers, lowest first, each importing only those below it:

    reactive_services.errors      the exception hierarchy
    reactive_services.adapters    brokers (memory, kafka), websockets, Message, codecs
    reactive_services.operators   operators for service pipelines
    runtime                       Microservice, ClientProxy, run, the CLI core, metrics, auth
    reactive_services.testing     helpers for users' tests (message factory, marbles, contracts)

Modules inside the package import from the module that defines a name, never from this facade,
so importing any of them never imports a higher layer.
"""

from . import errors
from ._payloads import PayloadModel
from ._run import Running, System, run, serve
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
from .adapters import Broker, Headers, Message, RecordMetadata, current_message, header, track
from .adapters.kafka import KafkaBroker
from .adapters.memory import InMemoryBroker

__version__ = "0.1.0"

__all__ = [
    "Broker",
    "ClientProxy",
    "Controller",
    "EventPatternSpec",
    "Headers",
    "InMemoryBroker",
    "KafkaBroker",
    "Message",
    "MessagePatternSpec",
    "Microservice",
    "PayloadModel",
    "RecordMetadata",
    "ReplyObservable",
    "Running",
    "System",
    "current_message",
    "errors",
    "event_pattern",
    "header",
    "message_pattern",
    "run",
    "serve",
    "start_all_microservices",
    "track",
]
