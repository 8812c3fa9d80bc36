"""Wait for a condition, collect what an Observable emits, read records from a broker: for async tests."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from reactivex import Observable

from reactive_services.adapters import Broker, Message

__all__ = ["Collected", "collect", "consume", "unique_name", "wait_for", "wait_for_sync"]

T = TypeVar("T")


def unique_name(prefix: str = "t") -> str:
    """A topic / group name no other test uses: ``<prefix>-<10 hex digits>``.

    Example::

        >>> unique_name("orders").startswith("orders-") and len(unique_name("orders")) == 17
        True
    """
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@overload
async def wait_for(  # an awaitable result is awaited, not returned
    predicate: Callable[[], Awaitable[T]], timeout: float = ..., *, interval: float = ..., what: str = ...
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T], timeout: float = ..., *, interval: float = ..., what: str = ...
) -> T: ...


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    *,
    interval: float = 0.01,
    what: str = "",
) -> Any:
    """Poll ``predicate`` every ``interval`` seconds until it returns a truthy value; return that value.

    ``predicate`` may be a plain function or return an awaitable (``async def``, or a lambda
    calling one), so ``await wait_for(lambda: broker.committed(g, t, 0))`` works too.

    Example::

        await wait_for(lambda: len(seen) == 3, timeout=5, what="3 messages")
        offset = await wait_for(lambda: broker.committed("g", "orders", 0))

    Args:
        predicate: ``() -> value`` or ``() -> Awaitable[value]``; called at least once.
        timeout: seconds before giving up.
        interval: seconds between two calls.
        what: what is awaited, for the failure message (default: the predicate's repr).

    Returns:
        The first truthy value ``predicate`` returned.

    Raises:
        AssertionError: still falsy after ``timeout`` seconds (a test failure, not an error).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or repr(predicate)}")
        await asyncio.sleep(interval)


def wait_for_sync(predicate: Callable[[], T], timeout: float = 30.0, *, interval: float = 0.1, what: str = "") -> T:
    """:func:`wait_for` for synchronous tests (e.g. a browser driven by Selenium): blocks with ``time.sleep``.

    Example::

        button = wait_for_sync(lambda: driver.find_elements(By.ID, "buy"), timeout=10, what="the buy button")

    Returns:
        The first truthy value ``predicate`` returned.

    Raises:
        AssertionError: still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or repr(predicate)}")
        time.sleep(interval)


@dataclass
class Collected(Generic[T]):
    """What :func:`collect` saw: the items in order, and how the stream ended.

    Attributes:
        items: every ``on_next`` value, in order.
        error: the ``on_error`` exception, or None.
        completed: True after ``on_completed``.
    """

    items: list[T] = field(default_factory=list)
    error: BaseException | None = None
    completed: bool = False

    @property
    def ended(self) -> bool:
        """True when the stream completed or failed."""
        return self.completed or self.error is not None

    def values(self) -> list[Any]:
        """``[item.value for item in items]`` (for a stream of :class:`~reactive_services.adapters.Message`)."""
        return [item.value for item in self.items]  # type: ignore[attr-defined]  # Messages have .value


async def collect(
    observable: Observable[T],
    n: int | None = None,
    *,
    timeout: float = 30.0,
    stop: asyncio.Event | None = None,
    on_each: Callable[[T], None] | None = None,
) -> Collected[T]:
    """Subscribe to ``observable`` and gather what it emits until it ends, or until ``n`` items arrived.

    Without ``n``, waits for ``on_completed`` / ``on_error``. With ``n``, once ``n`` items
    arrived: if ``stop`` is given it is set and the stream is awaited to its end (a broker
    source given that ``stop`` event then commits what was handled and completes);
    otherwise the subscription is disposed at once. Items after the ``n``-th are kept too.
    The subscription is always disposed before returning.

    Example::

        got = await collect(client.send("math.add", {"a": 2, "b": 3}))
        assert got.items == [5] and got.completed

        stop = asyncio.Event()
        got = await collect(broker.source("orders", group_id="g", stop=stop), 3, stop=stop)

    Args:
        observable: the stream to subscribe to.
        n: how many items are enough (None: until the stream ends).
        timeout: seconds to wait in all.
        stop: an event to set once ``n`` items arrived (see above).
        on_each: called with each item before it is recorded (inside ``on_next``, so a
            broker source's ``current_message`` is set: it may :func:`~reactive_services.adapters.track`).

    Returns:
        A :class:`Collected` (``items``, ``error``, ``completed``); an ``on_error`` is
        returned in ``error``, not raised.

    Raises:
        AssertionError: the stream did not end (or did not send ``n`` items) within ``timeout``
            seconds; the message says how many items did arrive.
    """
    out: Collected[T] = Collected()
    done = asyncio.get_running_loop().create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    def on_next(item: T) -> None:
        if on_each is not None:
            on_each(item)
        out.items.append(item)
        if n is not None and len(out.items) >= n:
            if stop is not None:
                stop.set()
            else:
                finish()

    def on_error(error: Exception) -> None:
        out.error = error
        finish()

    def on_completed() -> None:
        out.completed = True
        finish()

    subscription = observable.subscribe(on_next, on_error, on_completed)
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        wanted = "the end of the stream" if n is None else f"{n} items"
        raise AssertionError(f"timed out after {timeout:g} s waiting for {wanted}; got {len(out.items)}") from None
    finally:
        subscription.dispose()
    return out


async def consume(
    broker: Broker,
    topics: str | list[str],
    n: int,
    *,
    group_id: str | None = None,
    timeout: float = 30.0,
    on_each: Callable[[Message], None] | None = None,
    **source_options: Any,
) -> Collected[Message]:
    """Read ``n`` records of ``topics`` in a consumer group, then stop the source so that it commits and completes.

    It is :func:`collect` on ``broker.source(topics, group_id=..., stop=stop, **source_options)``
    with ``stop`` set after the ``n``-th message.

    Example::

        got = await consume(broker, "orders", 3, group_id="billing")
        assert [m.value["i"] for m in got.items] == [0, 1, 2] and got.completed
        assert await broker.committed("billing", "orders", 0) == 3

    Args:
        broker: any :class:`~reactive_services.adapters.Broker`.
        topics: a topic or topics, as ``Broker.source`` takes them.
        n: how many messages to read (messages, >= 1).
        group_id: the consumer group (default: a fresh :func:`unique_name`).
        timeout: seconds to wait in all.
        on_each: called inside each ``on_next`` (it may ``track`` work or raise).
        source_options: passed on to ``broker.source`` (``decode``, ``concurrency``, ...).

    Returns:
        The :class:`Collected` messages and how the source ended.

    Raises:
        AssertionError: fewer than ``n`` messages, or no end, within ``timeout`` seconds.
    """
    stop = asyncio.Event()
    source = broker.source(topics, group_id=group_id or unique_name("g"), stop=stop, **source_options)
    return await collect(source, n, timeout=timeout, stop=stop, on_each=on_each)
