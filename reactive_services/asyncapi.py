"""An AsyncAPI 3.0 document of a deployment, generated from its Microservices and ClientProxies.

:func:`asyncapi_document` describes, from the applications' declarations
(:mod:`reactive_services._contract`; nothing is started or connected):

- **servers**: the broker (Kafka's bootstrap servers, or the embedded broker) and, when given
  a :class:`WebSocketApi`, the gateway's websocket endpoint with its security schemes (JWT as
  a bearer token or a ``token`` query parameter);
- **channels**: one per topic (its address is the topic name, namespace included), the
  dead-letter topics (``<topic>.DLT``) and the default reply topics (``<pattern>.reply``)
  included; a channel's message payload is the JSON Schema of its payload type (pydantic's
  ``TypeAdapter.json_schema``, validation mode: what a consumer accepts), the shared schemas
  under ``components.schemas``;
- **operations**, one per application and use, their ids ``<application>_<action>_<topic>``:
  an ``@event_pattern`` handler *receives* (with its consumer group as a Kafka binding; a
  request, the service's request group ``<group_id>.requests``), a
  topic declared in ``emits=`` is *sent*, a ``@message_pattern`` handler *receives* a request
  with a **reply** (to the address in the request's ``reply-topic`` header, correlated by its
  ``correlation-id`` header; an ok reply or an error reply), a client's ``sends=`` pattern is
  *sent* with the same reply, and the websocket's event frames are *sent* to its clients.

The document is plain JSON data (a dict); :func:`dumps` writes it as JSON or YAML. The
specification: https://www.asyncapi.com/docs/reference/specification/v3.0.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson
import pydantic

from ._contract import Application, Channel, Deployment, Request, Target, WebSocketApi, applications, flatten
from .errors import ConfigError

__all__ = [
    "ASYNCAPI_VERSION",
    "Deployment",
    "ErrorReply",
    "RemoteErrorBody",
    "WebSocketApi",
    "asyncapi_document",
    "dumps",
]

#: The AsyncAPI version of the documents written here.
ASYNCAPI_VERSION = "3.0.0"

#: Kafka bindings version (https://github.com/asyncapi/bindings/tree/master/kafka).
_KAFKA_BINDINGS = "0.5.0"

_DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "the original record's headers, plus these",
    "properties": {
        "dlt.original.topic": {"type": "string"},
        "dlt.original.partition": {"type": "string", "description": "an integer, as text"},
        "dlt.original.offset": {"type": "string", "description": "an integer, as text"},
        "dlt.attempts": {"type": "string", "description": "handling attempts, an integer as text"},
        "dlt.exception.type": {"type": "string", "description": "e.g. ValidationError, DecodeError"},
        "dlt.reason": {"type": "string", "description": "why, naming the failing fields (at most 2,000 characters)"},
    },
}

_REQUEST_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "correlation-id": {"type": "string", "description": "32 hex digits (uuid4), chosen by the caller"},
        "reply-topic": {"type": "string", "description": "the topic to answer on"},
    },
    "required": ["correlation-id", "reply-topic"],
}


_TRACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "W3C Trace Context of the delivery (only when the gateway traces with OpenTelemetry)",
    "properties": {"traceparent": {"type": "string"}, "tracestate": {"type": "string"}},
    "required": ["traceparent"],
}


def _reply_headers(status: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "correlation-id": {"type": "string", "description": "copied from the request"},
            "reply-status": {"type": "string", "const": status},
        },
        "required": ["correlation-id", "reply-status"],
    }


def asyncapi_document(
    *targets: Target,
    title: str = "reactive-services",
    version: str = "1.0.0",
    description: str | None = None,
    servers: Mapping[str, Mapping[str, Any]] | None = None,
    websocket: WebSocketApi | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the applications in ``targets`` (see the module docstring).

    Args:
        targets: Microservices, ClientProxies, :class:`~reactive_services.System` objects, or
            iterables of those; or one :class:`Deployment` (its fields then give the other
            arguments).
        title: the document's ``info.title``.
        version: its ``info.version`` (the deployment's version, not AsyncAPI's).
        description: its ``info.description`` (default: which services and clients it lists).
        servers: AsyncAPI Server Objects by name, instead of the one derived from the first
            application's broker (``{"kafka": {"host": "broker:9092", "protocol": "kafka"}}``).
        websocket: the gateway's websocket endpoint to describe, or None.

    Returns:
        The document as JSON data (dicts, lists, strings, numbers, booleans).

    Raises:
        ConfigError: a target that is not a Microservice, ClientProxy or System (key
            ``"target"``), a payload type pydantic cannot describe as JSON Schema (key
            ``"model"``), or no target at all.
    """
    for target in targets:
        if isinstance(target, Deployment):
            if len(targets) > 1:
                raise ConfigError("target", "a Deployment describes the whole document: give it alone")
            return asyncapi_document(
                *target.applications,
                title=target.title,
                version=target.version,
                description=target.description,
                servers=target.servers,
                websocket=target.websocket,
            )
    apps = applications(*targets)
    if not apps:
        raise ConfigError("target", "nothing to describe: give at least one Microservice or ClientProxy")
    writer = _Writer()
    document_servers: dict[str, Any] = {}
    for name, server in (servers if servers is not None else {"broker": _broker_server(targets)}).items():
        key = _unique(_component_key(name), document_servers)
        document_servers[key] = dict(server)
        writer.server_refs.append({"$ref": f"#/servers/{key}"})
    if websocket is not None:  # first: its channel and message ids are taken before the topics'
        key = _unique("gateway", document_servers)
        document_servers[key] = writer.websocket(websocket, key)
    for app in apps:
        writer.application(app)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": title, "version": version, "description": description or _describe(apps)},
        "defaultContentType": "application/json",
        "servers": document_servers,
        "channels": writer.channels,
        "operations": writer.operations,
        "components": writer.components(),
    }


def dumps(document: Mapping[str, Any], format: Literal["json", "yaml"] = "json") -> bytes:
    """``document`` as JSON (indented, keys in document order) or YAML (UTF-8 bytes).

    Raises:
        ConfigError: an unknown format.
    """
    if format == "json":
        return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if format == "yaml":
        import yaml

        text: str = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=120)
        return text.encode()
    raise ConfigError("format", f"must be 'json' or 'yaml', got {format!r}")


def _describe(apps: Sequence[Application]) -> str:
    services = ", ".join(a.name for a in apps if a.kind == "service") or "none"
    clients = ", ".join(a.name for a in apps if a.kind == "client") or "none"
    return (
        f"Services: {services}. Producer-only clients: {clients}. Generated by reactive-services from the "
        "services' handlers and the clients' declarations. Records are JSON; a record that cannot be handled "
        "goes to <topic>.DLT with the reason in its dlt.* headers."
    )


def _broker_server(targets: Iterable[Any]) -> dict[str, Any]:
    found = flatten(targets)
    broker: Any = found[0].broker if found else None
    while hasattr(broker, "broker") and not hasattr(broker, "settings"):  # MeteredBroker and other wrappers
        broker = broker.broker
    settings = getattr(broker, "settings", None)
    bootstrap = getattr(settings, "bootstrap_servers", None)
    if isinstance(bootstrap, str):
        return {
            "host": bootstrap.split(",")[0].strip(),
            "protocol": "kafka",
            "description": f"Apache Kafka, bootstrap servers {bootstrap}",
        }
    return {
        "host": "localhost",
        "protocol": "kafka",
        "description": "the embedded in-memory broker (Kafka's semantics: topics, partitions, offsets, "
        "consumer groups), in the services' process",
    }


_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


def _component_key(text: str) -> str:
    """A key usable as an AsyncAPI channel, operation or component id (``[A-Za-z0-9_-]``)."""
    return _KEY_CHARS.sub("_", text) or "_"


def _unique(base: str, taken: Mapping[str, Any]) -> str:
    """``base``, or ``base_2``, ``base_3``... : the first not in ``taken``."""
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    return key


class _Writer:
    """Collects channels, operations, messages and schemas while the applications are written."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.server_refs: list[dict[str, str]] = []
        self._channel_ids: dict[str, str] = {}  # topic -> channel id
        self._messages: dict[str, dict[str, Any]] = {}
        self._payloads: dict[str, Any] = {}  # message key -> payload type (None: any JSON)
        self._message_of: dict[tuple[str, str], str] = {}  # (topic, role) -> message key
        self._ws_topics: dict[str, list[str]] = {}  # websocket channel -> the topics of its events

    # ----------------------------------------------------------------- channels and messages

    def channel(self, topic: str, *, summary: str | None = None) -> str:
        """The id of ``topic``'s channel, made on first use."""
        if topic in self._channel_ids:
            return self._channel_ids[topic]
        key = _unique(_component_key(topic), self.channels)
        self._channel_ids[topic] = key
        channel: dict[str, Any] = {
            "address": topic,
            "messages": {},
            "servers": list(self.server_refs),
            "bindings": {"kafka": {"topic": topic, "bindingVersion": _KAFKA_BINDINGS}},
        }
        if summary:
            channel["description"] = summary
        self.channels[key] = channel
        return key

    def message(self, topic: str, role: str, payload: Any, name: str | None = None, **fields: Any) -> dict[str, str]:
        """Put the message of ``topic`` in its ``role`` (``event``, ``request``, ``reply``,
        ``error``, ``dead_letter``) on the topic's channel; returns the operation's reference to
        it. A payload type given by one application fills in an untyped one of another."""
        channel_id = self.channel(topic)
        known = self._message_of.get((topic, role))
        if known is None:
            key = _unique(_component_key(name or topic), self._messages)
            self._message_of[(topic, role)] = known = key
            title = getattr(payload, "__name__", None)
            named = {"title": title} if isinstance(title, str) and isinstance(payload, type) else {}
            self._messages[key] = {"name": key, **named, **fields}
            self._payloads[key] = payload
            self.channels[channel_id]["messages"][key] = {"$ref": f"#/components/messages/{key}"}
        elif self._payloads[known] is None and payload is not None:
            self._payloads[known] = payload
        return {"$ref": f"#/channels/{channel_id}/messages/{known}"}

    # ----------------------------------------------------------------- operations

    def operation(self, app: Application, action: str, topic: str, body: dict[str, Any]) -> None:
        key = _unique(_component_key(f"{app.name}.{action}.{topic}"), self.operations)
        self.operations[key] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{self.channel(topic)}"},
            **body,
            "tags": [{"name": app.name}],
        }

    def application(self, app: Application) -> None:
        group = {} if app.group_id is None else {"groupId": {"type": "string", "enum": [app.group_id]}}
        bindings = {"bindings": {"kafka": {**group, "bindingVersion": _KAFKA_BINDINGS}}} if group else {}
        for channel in app.receives:
            ref = self.event(channel)
            self.operation(app, "receive", channel.topic, {**_summary(channel.summary), "messages": [ref], **bindings})
        for channel in app.sends:
            ref = self.event(channel)
            self.operation(app, "send", channel.topic, {**_summary(channel.summary), "messages": [ref]})
        requests_group = {"groupId": {"type": "string", "enum": [app.request_group_id]}}
        requests_bindings = {"bindings": {"kafka": {**requests_group, "bindingVersion": _KAFKA_BINDINGS}}}
        for request in app.answers:
            self.operation(app, "receive", request.topic, {**self.request(request), **requests_bindings})
        for request in app.requests:
            self.operation(app, "send", request.topic, self.request(request))

    def event(self, channel: Channel) -> dict[str, str]:
        if channel.dead_letter:
            return self.message(
                channel.topic,
                "dead_letter",
                None,
                None,
                title="Dead letter",
                summary="a record that could not be handled: the original key and bytes, the reason in dlt.* headers",
                headers=_DEAD_LETTER_HEADERS,
            )
        return self.message(channel.topic, "event", channel.payload, contentType="application/json")

    def request(self, request: Request) -> dict[str, Any]:
        ref = self.message(
            request.topic,
            "request",
            request.request,
            f"{request.topic}.request",
            contentType="application/json",
            headers=_REQUEST_HEADERS,
            correlationId={"location": "$message.header#/correlation-id"},
        )
        self.channel(request.reply_topic, summary=f"default reply topic of {request.topic}")
        ok = self.message(
            request.reply_topic,
            "reply",
            request.reply,
            f"{request.topic}.reply",
            contentType="application/json",
            headers=_reply_headers("ok"),
            correlationId={"location": "$message.header#/correlation-id"},
        )
        error = self.message(
            request.reply_topic,
            "error",
            ErrorReply,
            f"{request.topic}.error",
            title="Error reply",
            contentType="application/json",
            headers=_reply_headers("error"),
            correlationId={"location": "$message.header#/correlation-id"},
        )
        return {
            **_summary(request.summary),
            "messages": [ref],
            "reply": {
                "address": {
                    "location": "$message.header#/reply-topic",
                    "description": f"the request's reply-topic header (default {request.reply_topic})",
                },
                "channel": {"$ref": f"#/channels/{self.channel(request.reply_topic)}"},
                "messages": [ok, error],
            },
        }

    # ----------------------------------------------------------------- the websocket

    def websocket(self, api: WebSocketApi, server: str) -> dict[str, Any]:
        """Add the websocket's channel, messages and operations (served by ``server``); returns
        the Server Object."""
        names = sorted(api.channels)
        messages = {
            # "since": resume after a cursor (docs/websocket.md); "cursor": where a client resumes
            "ws_subscribe": _frame(
                "Subscribe", {"op": "subscribe", "channels": names, "since": "cursor"}, optional=("since",)
            ),
            "ws_unsubscribe": _frame("Unsubscribe", {"op": "unsubscribe", "channels": names}),
            "ws_ping": _frame("Ping", {"op": "ping"}),
            "ws_subscribed": _frame(
                "Subscribed", {"type": "subscribed", "channels": names, "cursor": "cursor"}, optional=("cursor",)
            ),
            "ws_recovery_failed": _frame(
                "Recovery failed",
                {"type": "recovery_failed", "reason": "text", "cursor": "cursor"},
                optional=("cursor",),
            ),
            "ws_pong": _frame("Pong", {"type": "pong"}),
            "ws_error": _frame("Error frame", {"type": "error", "error": "text"}),
            "ws_event": {"name": "ws_event", "title": "Event frame", "contentType": "application/json"},
        }
        self._ws_topics = {name: list(topics) for name, topics in api.channels.items()}
        self._messages.update(messages)
        self.channels["websocket"] = {
            "address": api.pathname,
            "servers": [{"$ref": f"#/servers/{server}"}],
            "description": "one connection; the client subscribes to channels and gets their events",
            "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
        }
        ref = "#/channels/websocket/messages/"
        self.operations["gateway_ws_receive"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/websocket"},
            "summary": "frames from a client: subscribe, unsubscribe, ping",
            "messages": [{"$ref": ref + k} for k in ("ws_subscribe", "ws_unsubscribe", "ws_ping")],
            "tags": [{"name": "gateway"}],
        }
        self.operations["gateway_ws_send"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/websocket"},
            "summary": "frames to a client: the events of its channels, and the answers to its frames",
            "messages": [
                {"$ref": ref + k} for k in ("ws_event", "ws_subscribed", "ws_recovery_failed", "ws_pong", "ws_error")
            ],
            "tags": [{"name": "gateway"}],
        }
        return {
            "host": api.host,
            "pathname": api.pathname,
            "protocol": api.protocol,
            "description": api.description
            or "the gateway's websocket: subscribe to channels, receive their events (frames are JSON text)",
            "security": [
                {"$ref": "#/components/securitySchemes/bearer"},
                {"$ref": "#/components/securitySchemes/token_query"},
            ],
        }

    # ----------------------------------------------------------------- schemas

    def components(self) -> dict[str, Any]:
        """``components.messages`` and ``components.schemas``: every payload type's JSON Schema,
        generated together so that models shared by several payloads are written once."""
        typed = [(key, t) for key, t in self._payloads.items() if t is not None]
        problems = (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError)
        try:
            adapters = [(key, "validation", pydantic.TypeAdapter(t)) for key, t in typed]
            schemas, definitions = pydantic.TypeAdapter.json_schemas(
                adapters,  # type: ignore[arg-type]
                ref_template="#/components/schemas/{model}",
            )
        except problems as exc:
            for key, type_ in typed:  # which one: named in the error
                try:
                    pydantic.TypeAdapter(type_).json_schema()
                except problems:
                    topic = next(t for (t, _), k in self._message_of.items() if k == key)
                    raise ConfigError(
                        "model", f"cannot describe the payload type {type_!r} of {topic!r} as JSON Schema: {exc}"
                    ) from exc
            raise ConfigError("model", f"cannot describe a payload type as JSON Schema: {exc}") from exc
        messages = {}
        for key, message in self._messages.items():
            message = dict(message)
            if key in self._payloads:
                message["payload"] = schemas[(key, "validation")] if self._payloads[key] is not None else {}
            messages[key] = message
        ws_topics = self._ws_topics
        if "ws_event" in messages:
            messages["ws_event"]["payload"] = self._event_frame(ws_topics, messages)
        out: dict[str, Any] = {"messages": messages, "schemas": definitions.get("$defs", {})}
        if "ws_event" in messages:
            out["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "token_query": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "the same JWT as a query parameter, for browsers' websockets",
                },
            }
        return out

    def _event_frame(self, ws_topics: Mapping[str, list[str]], messages: Mapping[str, Any]) -> dict[str, Any]:
        variants = []
        for name, topics in sorted(ws_topics.items()):
            for topic in topics:
                key = self._message_of.get((topic, "event"))
                data = messages[key]["payload"] if key is not None else {}
                variants.append(
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": "event"},
                            "channel": {"const": name},
                            "event": {
                                "type": "object",
                                "properties": {"topic": {"const": topic}, "data": data},
                                "required": ["topic", "data"],
                            },
                            "cursor": {"type": "string"},
                            "trace": _TRACE_SCHEMA,
                        },
                        "required": ["type", "channel", "event"],
                    }
                )
        return {"oneOf": variants} if variants else {"type": "object"}


class RemoteErrorBody(pydantic.BaseModel):
    """What an error reply says: the handler's exception."""

    type: str = pydantic.Field(description="the exception's class name, e.g. ValidationError")
    message: str = pydantic.Field(description="its message")


class ErrorReply(pydantic.BaseModel):
    """The payload of an error reply (header ``reply-status: error``): the handler raised, or the
    request did not decode or validate. The caller raises ``RemoteError``."""

    error: RemoteErrorBody


def _frame(title: str, example: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, value in example.items():
        if name in ("op", "type"):
            properties[name] = {"const": value}
        elif isinstance(value, list):
            properties[name] = {"type": "array", "items": {"type": "string", "enum": value} if value else {}}
        else:
            properties[name] = {"type": "string"}
    payload = {"type": "object", "properties": properties, "required": [k for k in example if k not in optional]}
    return {"name": _component_key(title), "title": title, "contentType": "application/json", "payload": payload}


def _summary(text: str | None) -> dict[str, str]:
    return {"summary": text} if text else {}
