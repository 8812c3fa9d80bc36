"""Fixtures of the gateway tests: the shop on the in-memory broker behind a running gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gatewayshop import Shop, start_shop

from reactive_services.adapters.memory import InMemoryBroker


@pytest.fixture
async def memory_broker() -> AsyncIterator[InMemoryBroker]:
    broker = InMemoryBroker()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def shop(memory_broker: InMemoryBroker, tmp_path: Path) -> AsyncIterator[Shop]:
    """The shop on the in-memory broker, behind the gateway (default settings)."""
    async with start_shop(memory_broker, tmp_path) as s:
        yield s
