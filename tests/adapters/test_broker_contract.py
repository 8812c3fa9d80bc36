"""One contract, three brokers: the in-memory broker, a real Apache Kafka broker and a real RabbitMQ server.

The test cases are the kit's (:mod:`reactive_services.testing.contract`); here they run on
both of the library's brokers.
"""

from __future__ import annotations

import pytest

from reactive_services.adapters import Broker
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.rabbitmq import RabbitBroker
from reactive_services.testing.contract import BrokerContract


class TestInMemoryBroker(BrokerContract):
    def make_broker(self) -> Broker:
        return InMemoryBroker()


class TestKafkaBroker(BrokerContract):
    @pytest.fixture(autouse=True)
    def _bootstrap(self, kafka_bootstrap: str) -> None:
        self.bootstrap = kafka_bootstrap

    def make_broker(self) -> Broker:
        return KafkaBroker(self.bootstrap)


class TestRabbitBroker(BrokerContract):
    """RabbitMQ: queues, not a log (``has_log = False``); the cases declare their groups first."""

    has_log = False

    @pytest.fixture(autouse=True)
    def _url(self, rabbitmq_url: str) -> None:
        self.url = rabbitmq_url

    def make_broker(self) -> Broker:
        return RabbitBroker(self.url)
