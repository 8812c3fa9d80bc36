"""The exported names of every public package, written out literally.

Adding, removing or renaming a public name must be a deliberate change to this file too.
"""

from __future__ import annotations

import importlib

import pytest

EXPECTED_ALL: dict[str, list[str]] = {
    "reactive_services": [
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
    ],
    "reactive_services.gateway": [
        "Aggregate",
        "BearerAuth",
        "BodyLimitMiddleware",
        "Problem",
        "ReplyWarmup",
        "RequestMetricsMiddleware",
        "Requester",
        "aggregate",
        "bearer_token",
        "close_at_expiry",
        "describe_router",
        "field_path",
        "insufficient_scope",
        "part_error",
        "plain_response",
        "problems",
        "readiness_report",
        "send_within",
        "serve_notifications",
        "too_many_attempts",
        "unauthorized",
        "upstream_error",
        "validation_error_handler",
    ],
    "reactive_services.metrics": ["MeteredBroker", "ServiceMetrics", "SourceState"],
    "reactive_services.asyncapi": [
        "ASYNCAPI_VERSION",
        "Deployment",
        "ErrorReply",
        "RemoteErrorBody",
        "WebSocketApi",
        "asyncapi_document",
        "dumps",
    ],
    "reactive_services.topology": ["Edge", "Node", "Topology", "render_svg", "topology"],
    "reactive_services.grpc": [
        "ERROR_TYPE",
        "SERVICE",
        "SLOW_CONSUMER",
        "GrpcClient",
        "GrpcServer",
        "Servicer",
        "StreamStats",
        "abort_with",
        "write_stream",
    ],
    "reactive_services.testing.local_rabbitmq": [
        "LocalRabbitMQError",
        "amqp_ok",
        "is_running",
        "server_command",
        "start",
        "status",
        "stop",
    ],
    "reactive_services.adapters.tracing": [
        "TRACE_HEADERS",
        "TraceHeaders",
        "extract_context",
        "process_span",
        "publish_span",
        "record_failure",
        "set_tracer_provider",
        "start_process_span",
        "trace_carrier",
        "tracer",
        "tracer_provider",
        "tracing_enabled",
        "with_trace",
    ],
    "reactive_services.readiness": ["consumer_groups", "readiness", "ready"],
    "reactive_services.auth": [
        "Claims",
        "JwtConfig",
        "check_scopes",
        "issue_token",
        "require_scopes",
        "verify_token",
    ],
    "reactive_services.errors": [
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
    ],
    "reactive_services.operators": [
        "ChangelogStore",
        "DeadLetter",
        "Window",
        "WindowRunner",
        "backoff_delay",
        "batch",
        "dead_letter",
        "decode_json",
        "map_async",
        "retry_with_backoff",
        "sliding_event_time_window",
        "to_loop",
        "tumbling_event_time_window",
    ],
    "reactive_services.adapters": [
        "DLT_SUFFIX",
        "Batch",
        "Broker",
        "BrokerSink",
        "BrokerSource",
        "CurrentMessage",
        "DeadLetter",
        "DeadLetterSink",
        "Decoder",
        "Emitter",
        "Headers",
        "HeadersIn",
        "Hold",
        "LogReader",
        "Message",
        "OffsetReset",
        "OffsetTracker",
        "PayloadObserver",
        "PayloadRoute",
        "ProcessingGuarantee",
        "RecordMetadata",
        "TopicPartition",
        "check_auto_offset_reset",
        "check_processing_guarantee",
        "current_message",
        "dead_letter_headers",
        "dead_letter_topic",
        "declare_group",
        "decode_json",
        "deliver",
        "encode_headers",
        "encode_key",
        "encode_value",
        "header",
        "headers_to_dict",
        "hold",
        "payload_routes",
        "publish_dead_letter",
        "track",
        "wait_visible",
    ],
    "reactive_services.adapters.memory": ["InMemoryBroker"],
    "reactive_services.testing": [
        "SUBSCRIBED",
        "Collected",
        "Commit",
        "CrashPoint",
        "CrashReport",
        "LostRecord",
        "MarbleRun",
        "MarbleScheduler",
        "MarbleSource",
        "check_at_least_once",
        "collect",
        "consume",
        "expect_marbles",
        "make_message",
        "marble_records",
        "run_marbles",
        "run_marbles_async",
        "unique_name",
        "wait_for",
        "wait_for_sync",
    ],
    "reactive_services.testing.contract": ["BrokerContract", "BrokerFixture", "ConcurrencyContract"],
    "reactive_services.testing.local_kafka": [
        "KAFKA_VERSION",
        "LocalKafkaError",
        "api_versions_ok",
        "ensure_libs",
        "is_running",
        "start",
        "status",
        "stop",
    ],
    "reactive_services.examples.shop.auth": [
        "CHANNEL_SCOPES",
        "DEFAULT_DB_PATH",
        "INVALID_CREDENTIALS",
        "SCOPES",
        "AuthController",
        "LoginThrottle",
        "UserStore",
        "default_db_path",
    ],
    "reactive_services.examples.shop.gateway": [
        "INVENTORY_TRANSPORTS",
        "PATTERNS",
        "GatewayRequests",
        "GatewaySettings",
        "InventoryTransport",
        "LoginRequest",
        "OrderItemIn",
        "OrderRequest",
        "create_app",
    ],
    "reactive_services.examples.shop.order_query": [
        "MAX_ORDER_ID_CHARS",
        "OrderQueryController",
        "OrderStore",
        "order_id_of",
    ],
    "reactive_services.adapters.kafka": ["KafkaBroker", "SourceStats"],
    "reactive_services.adapters.rabbitmq": ["RabbitBroker"],
    "reactive_services.adapters.websocket": [
        "CLOSE_FORBIDDEN",
        "CLOSE_UNAUTHORIZED",
        "MAX_CHANNELS",
        "MAX_CHANNEL_LENGTH",
        "MAX_CURSOR_LENGTH",
        "ClientFrame",
        "Connection",
        "ConnectionState",
        "CursorError",
        "Notification",
        "NotificationHub",
        "NotificationLog",
        "OverflowPolicy",
        "Reconnect",
        "StarletteTransport",
        "Transport",
        "WebSocketServer",
        "WebSocketsTransport",
        "connect",
        "decode_cursor",
        "decode_server_frame",
        "encode_cursor",
        "encode_error",
        "encode_event",
        "encode_pong",
        "encode_recovery_failed",
        "encode_subscribe",
        "encode_subscribed",
        "encode_unsubscribe",
        "parse_client_frame",
        "validate_channels",
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPECTED_ALL))
def test_all_is_exactly_the_expected_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ repeats a name"
    # order inside __all__ is not part of the API; the set of names is
    assert sorted(exported) == sorted(EXPECTED_ALL[module_name])


@pytest.mark.parametrize("module_name", sorted(EXPECTED_ALL))
def test_every_exported_name_is_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        namespace: dict[str, object] = {}
        exec(f"from {module_name} import {name}", namespace)  # the form users write
        assert namespace[name] is getattr(module, name)
        assert not name.startswith("_")


def test_brokers_satisfy_the_broker_protocol() -> None:
    from reactive_services.adapters import Broker
    from reactive_services.adapters.kafka import KafkaBroker
    from reactive_services.adapters.memory import InMemoryBroker
    from reactive_services.adapters.rabbitmq import RabbitBroker

    memory = InMemoryBroker()
    kafka = KafkaBroker("127.0.0.1:1")  # constructing does not connect
    rabbit = RabbitBroker("amqp://guest:guest@127.0.0.1:1/")
    assert isinstance(memory, Broker)
    assert isinstance(kafka, Broker)
    assert isinstance(rabbit, Broker)
    assert memory.kind == "memory"
    assert kafka.kind == "kafka"
    assert rabbit.kind == "rabbitmq"
    assert not isinstance(object(), Broker)
