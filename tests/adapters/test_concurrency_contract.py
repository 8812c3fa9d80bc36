"""``source(..., concurrency=K)``: the same contract on the in-memory broker and on real Kafka.

The test cases are the kit's (:class:`reactive_services.testing.contract.ConcurrencyContract`).
"""

from __future__ import annotations

import pytest

from reactive_services.adapters import Broker
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.rabbitmq import RabbitBroker
from reactive_services.testing.contract import ConcurrencyContract


class TestInMemoryBrokerConcurrency(ConcurrencyContract):
    def make_broker(self) -> Broker:
        return InMemoryBroker()


class TestKafkaBrokerConcurrency(ConcurrencyContract):
    @pytest.fixture(autouse=True)
    def _bootstrap(self, kafka_bootstrap: str) -> None:
        self.bootstrap = kafka_bootstrap

    def make_broker(self) -> Broker:
        return KafkaBroker(self.bootstrap)


class TestRabbitBrokerConcurrency(ConcurrencyContract):
    has_log = False

    @pytest.fixture(autouse=True)
    def _url(self, rabbitmq_url: str) -> None:
        self.url = rabbitmq_url

    def make_broker(self) -> Broker:
        return RabbitBroker(self.url)
