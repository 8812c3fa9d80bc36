"""Waiting helpers shared by the async tests (``tests/`` is on ``sys.path`` via its conftest)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable


def name(prefix: str) -> str:
    """A unique topic / group name: ``<prefix>-<10 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms until it is true.

    Raises:
        AssertionError: still false after ``timeout`` seconds.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)
