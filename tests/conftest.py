"""Fixtures shared by the whole suite.

``kafka_bootstrap`` is a real Apache Kafka broker: ``$KAFKA_BOOTSTRAP_SERVERS`` when set,
otherwise a single-node KRaft broker started once per session by
:mod:`reactive_services.testing.local_kafka` (jars fetched with ``mvn`` on first use and
cached) and stopped at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reactive_services.adapters.tracing import set_tracer_provider
from reactive_services.testing import local_kafka as _local_kafka
from reactive_services.testing import unique_name


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a running Kafka broker for this test session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    state_dir = tmp_path_factory.mktemp("local-kafka")
    bootstrap = _local_kafka.start(state_dir)
    try:
        yield bootstrap
    finally:
        _local_kafka.stop(state_dir)


@pytest.fixture(scope="session")
def rabbitmq_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``amqp://...`` of a running RabbitMQ server for this test session: ``RABBITMQ_URL``, else
    one started for the session (:mod:`reactive_services.testing.local_rabbitmq`)."""
    env = os.environ.get("RABBITMQ_URL")
    if env:
        yield env
        return
    from reactive_services.testing import local_rabbitmq

    state_dir = tmp_path_factory.mktemp("local-rabbitmq")
    url = local_rabbitmq.start(state_dir)
    try:
        yield url
    finally:
        local_rabbitmq.stop(state_dir)


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """The library traced with an OpenTelemetry SDK provider of its own for the test
    (:func:`reactive_services.adapters.tracing.set_tracer_provider`); yields the SDK's
    ``InMemorySpanExporter`` holding the finished spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        set_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def unique_topic() -> Callable[..., str]:
    """``unique_topic(prefix="t") -> "t-<10 hex>"``: a name no other test uses (the kit's ``unique_name``)."""
    return unique_name


@pytest.fixture
async def kafka_broker(kafka_bootstrap: str) -> AsyncIterator[KafkaBroker]:  # noqa: F821
    """A started :class:`reactive_services.adapters.kafka.KafkaBroker` with short timeouts; stopped afterwards."""
    from reactive_services.adapters.kafka import KafkaBroker

    broker = KafkaBroker(kafka_bootstrap, connect_timeout_s=10.0, request_timeout_s=10.0, commit_interval_s=0.0)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def _make_broker(kind: str, request: pytest.FixtureRequest) -> object:
    from reactive_services.adapters.memory import InMemoryBroker

    if kind == "memory":
        return InMemoryBroker()
    if kind == "rabbitmq":
        from reactive_services.adapters.rabbitmq import RabbitBroker

        return RabbitBroker(request.getfixturevalue("rabbitmq_url"))
    from reactive_services.adapters.kafka import KafkaBroker

    return KafkaBroker(request.getfixturevalue("kafka_bootstrap"))


@pytest.fixture(params=["memory", "kafka", "rabbitmq"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """A started broker: the in-memory one, a real Kafka broker (``kafka_bootstrap``), then a
    real RabbitMQ server (``rabbitmq_url``).

    Used by the runtime tests (payload handlers, request-reply, metrics, tracing, typed payloads).
    """
    b = _make_broker(request.param, request)
    await b.start()  # type: ignore[attr-defined]
    yield b
    await b.stop()  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "kafka"])
async def log_broker(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """:func:`broker` for what needs a log's offsets (consumer lag as end minus committed
    offsets): the in-memory broker and Kafka. RabbitMQ has no log; its answer to lag is
    ``RabbitBroker.queue_depths``."""
    b = _make_broker(request.param, request)
    await b.start()  # type: ignore[attr-defined]
    yield b
    await b.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def local_kafka() -> ModuleType:
    """:mod:`reactive_services.testing.local_kafka` (``start(state_dir)``, ``stop(state_dir)``), for tests
    that stop and restart a broker of their own."""
    return _local_kafka
