"""What a deployment's applications read and write, from their declarations: the common ground of
the AsyncAPI document (:mod:`reactive_services.asyncapi`) and the topology graph
(:mod:`reactive_services.topology`).

Nothing here runs or connects anything: a :class:`~reactive_services.Microservice` describes
itself from its controllers' ``@event_pattern`` / ``@message_pattern`` handlers (their topics,
the payload types of their annotations or ``model=``, the reply types of their return
annotations, the topics declared with ``emits=``), a :class:`~reactive_services.ClientProxy`
from its ``emits=`` / ``sends=`` declarations.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from reactivex import Observable

from reactive_services.adapters import dead_letter_topic

from ._payloads import payload_model, pipeline_model
from ._request_reply import MessagePatternSpec
from ._run import System
from ._runtime import ClientProxy, EventPatternSpec, Microservice
from .errors import ConfigError

__all__ = ["Application", "Channel", "Deployment", "Request", "Target", "WebSocketApi", "applications", "flatten"]

#: What the describing functions accept: Microservices, ClientProxies, a :class:`System`, a
#: :class:`Deployment` (its applications), or (nested) iterables of those.
Target: TypeAlias = "Microservice | ClientProxy | System | Deployment | Iterable[Any]"


@dataclass(frozen=True)
class WebSocketApi:
    """The gateway's websocket endpoint, as the AsyncAPI document shows it.

    Attributes:
        host: ``HOST:PORT`` clients connect to.
        pathname: the endpoint's path.
        channels: ``{websocket channel: topics whose events it carries}``; an event frame's
            ``event`` is ``{"topic": <topic>, "data": <the topic's payload>}``.
        protocol: ``"ws"`` or ``"wss"``.
        description: a few words on the endpoint.
    """

    host: str = "localhost:8000"
    pathname: str = "/ws"
    channels: Mapping[str, Sequence[str]] = field(default_factory=dict)
    protocol: Literal["ws", "wss"] = "ws"
    description: str | None = None


@dataclass(frozen=True)
class Deployment:
    """A deployment to describe: its applications, and what its documents say besides them.

    What ``reactive-services asyncapi`` / ``topology`` take (or a factory returning one), and
    what :func:`~reactive_services.asyncapi.asyncapi_document` takes alone.

    Attributes:
        applications: Microservices, ClientProxies, Systems (not started: only their
            declarations are read).
        title: the AsyncAPI document's ``info.title``.
        version: its ``info.version``.
        description: its ``info.description`` (None: which services and clients it lists).
        servers: AsyncAPI Server Objects by name (None: derived from the first broker).
        websocket: the gateway's websocket endpoint, or None.
    """

    applications: Sequence[Any]
    title: str = "reactive-services"
    version: str = "1.0.0"
    description: str | None = None
    servers: Mapping[str, Mapping[str, Any]] | None = None
    websocket: WebSocketApi | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    """A topic as one application uses it.

    Attributes:
        topic: the topic name, namespace included.
        payload: the payload type (a pydantic model, a dataclass, a ``TypedDict``, any type
            ``pydantic.TypeAdapter`` accepts), or None: JSON of any shape.
        summary: the first line of the handler's docstring, or None.
        dead_letter: True for a dead-letter topic (``<topic>.DLT``: the original key and bytes,
            the reason in ``dlt.*`` headers).
    """

    topic: str
    payload: Any = None
    summary: str | None = None
    dead_letter: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """A request pattern: the request topic, its default reply topic and their payload types.

    Attributes:
        topic: the request topic, namespace included.
        reply_topic: the topic replies go to by default (``<topic>.reply``; a request's
            ``reply-topic`` header may name another).
        request: the request payload type, or None (JSON of any shape).
        reply: the reply payload type (the handler's return annotation), or None.
        summary: the first line of the handler's docstring, or None.
    """

    topic: str
    reply_topic: str
    request: Any = None
    reply: Any = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class Application:
    """One application of a deployment: a service (consumes) or a client (produces only).

    Attributes:
        name: the service's name, or the client's ``client_id``.
        kind: ``"service"`` or ``"client"``.
        group_id: the consumer group of a service's event sources (None for a client).
        receives: the event topics it consumes.
        sends: the topics it publishes events to (declared ``emits``), then the dead-letter
            topics of what it consumes.
        answers: the request patterns it answers (``@message_pattern``).
        requests: the request patterns it sends (a client's ``sends``).
        request_group_id: the consumer group of a service's requests (``<group_id>.requests``).
    """

    name: str
    kind: Literal["service", "client"]
    group_id: str | None = None
    receives: tuple[Channel, ...] = ()
    sends: tuple[Channel, ...] = ()
    answers: tuple[Request, ...] = ()
    requests: tuple[Request, ...] = ()
    request_group_id: str | None = None


def applications(*targets: Target) -> list[Application]:
    """The :class:`Application` of each Microservice and ClientProxy in ``targets`` (a
    :class:`System` gives its services; iterables are flattened), in order.

    A request a client sends takes its payload types from the service that answers it, when
    that service is among ``targets``.

    Raises:
        ConfigError: a target that is none of these (key ``"target"``); a declared type
            pydantic cannot describe (key ``"model"``).
    """
    found = flatten(targets)
    apps = [_service(t) if isinstance(t, Microservice) else _client(t) for t in found]
    answered = {r.topic: r for app in apps for r in app.answers}
    return [
        dataclasses.replace(app, requests=tuple(_completed(r, answered.get(r.topic)) for r in app.requests))
        if app.requests
        else app
        for app in apps
    ]


def _completed(sent: Request, answered: Request | None) -> Request:
    """A client's request with what the answering service declares filled in: the request type,
    the summary, and the reply type unless the client declared its own (``sends={pattern: T}``,
    what it validates replies as); the client's reply topic is kept."""
    if answered is None:
        return sent
    reply = sent.reply if sent.reply is not None else answered.reply
    return Request(sent.topic, sent.reply_topic, answered.request, reply, answered.summary)


def flatten(targets: Iterable[Any]) -> list[Microservice | ClientProxy]:
    """The Microservices and ClientProxies of ``targets``, in order (a :class:`System` gives its
    services, a :class:`Deployment` its applications; iterables are flattened).

    Raises:
        ConfigError: a target that is none of these (key ``"target"``).
    """
    found: list[Microservice | ClientProxy] = []
    for target in targets:
        if isinstance(target, Microservice | ClientProxy):
            found.append(target)
        elif isinstance(target, System):
            found.extend(target.services)
        elif isinstance(target, Deployment):
            found.extend(flatten(target.applications))
        elif isinstance(target, Iterable) and not isinstance(target, str | bytes):
            found.extend(flatten(target))
        else:
            raise ConfigError("target", f"expected a Microservice, a ClientProxy or a System, got {target!r}")
    return found


def _summary(fn: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(fn)
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


def _service(service: Microservice) -> Application:
    ns = service.namespace
    receives: list[Channel] = []
    sends: dict[str, Channel] = {}
    answers: list[Request] = []
    for spec, fn in service._declared:
        summary = _summary(fn)
        if isinstance(spec, MessagePatternSpec):
            model = payload_model(fn, spec.model)
            for pattern in spec.patterns:
                topic = ns + pattern
                answers.append(Request(topic, topic + ".reply", _type(model), reply_type(fn), summary))
            continue
        assert isinstance(spec, EventPatternSpec)
        model = pipeline_model(fn, spec.model) if spec.pipeline else payload_model(fn, spec.model)
        receives.extend(Channel(ns + p, _type(model), summary) for p in spec.patterns)
        for pattern, type_ in spec.emits:
            if ns + pattern not in sends or sends[ns + pattern].payload is None:
                sends[ns + pattern] = Channel(ns + pattern, type_)
    dead_letters = [
        Channel(dead_letter_topic(topic), summary=f"records of {topic} that could not be handled", dead_letter=True)
        for topic in [*(c.topic for c in receives), *(r.topic for r in answers)]
    ]
    return Application(
        service.name,
        "service",
        service.group_id,
        tuple(receives),
        (*sends.values(), *dead_letters),
        tuple(answers),
        request_group_id=service.request_group_id,
    )


def _client(client: ClientProxy) -> Application:
    ns = client.namespace
    sends = tuple(Channel(ns + pattern, type_) for pattern, type_ in client.emits or ())
    requests = tuple(
        Request(ns + pattern, client._requester.reply_topic(pattern), None, type_)
        for pattern, type_ in client.sends or ()
    )
    return Application(client.client_id, "client", None, sends=sends, requests=requests)


def _type(model: Any) -> Any:
    return None if model is None else model.type


def reply_type(handler: Callable[..., Any]) -> Any:
    """The reply type of a ``@message_pattern`` handler: its return annotation (``Observable[T]``
    gives ``T``; only that annotation is resolved), or None when it has none or it cannot be
    resolved."""
    target = getattr(handler, "__func__", handler)
    try:
        annotation = inspect.signature(target).return_annotation
    except (TypeError, ValueError):
        return None
    if annotation is inspect.Signature.empty:
        return None
    if isinstance(annotation, str):  # from __future__ import annotations: resolve this one only
        holder = types.SimpleNamespace(
            __annotations__={"reply": annotation}, __globals__=getattr(target, "__globals__", {})
        )
        try:
            annotation = typing.get_type_hints(holder, include_extras=True)["reply"]
        except Exception:  # noqa: BLE001 - an unresolvable annotation describes nothing
            return None
    if annotation is None:
        return type(None)
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, Observable):
        args = typing.get_args(annotation)
        return args[0] if args else None
    if annotation is Observable:
        return None
    return annotation
