"""Bug-report case f: a publish while the broker is down raises within the configured timeout."""

from __future__ import annotations

import time
import uuid

import pytest

from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.errors import BrokerError


@pytest.mark.timeout(180)
async def test_a_publish_while_the_broker_is_down_raises_within_the_timeout(tmp_path, local_kafka) -> None:
    local = local_kafka
    bootstrap = local.start(tmp_path / "kafka")
    broker = KafkaBroker(bootstrap, request_timeout_s=3.0, connect_timeout_s=3.0)
    topic = f"down-{uuid.uuid4().hex[:8]}"
    try:
        await broker.start()
        await broker.create_topics([topic], partitions=1)
        sent = await broker.emit(topic, {"n": 1})
        assert sent.offset == 0
        local.stop(tmp_path / "kafka")
        t0 = time.monotonic()
        with pytest.raises(BrokerError):  # PublishError (or BrokerUnavailableError): never a silent success
            await broker.emit(topic, {"n": 2})
        assert time.monotonic() - t0 < 3.0 + 2.0
    finally:
        await broker.stop()
        local.stop(tmp_path / "kafka")
