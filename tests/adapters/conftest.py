from __future__ import annotations

import pytest

from adapters.memory import InMemoryBroker


@pytest.fixture(params=["memory", "kafka"])
async def broker(request: pytest.FixtureRequest):
    """A started broker: the in-memory one, then a real Kafka broker (tests/conftest.py starts it)."""
    if request.param == "memory":
        b = InMemoryBroker()
    else:
        from adapters.kafka import KafkaBroker

        b = KafkaBroker(request.getfixturevalue("kafka_bootstrap"))
    await b.start()
    yield b
    await b.stop()
