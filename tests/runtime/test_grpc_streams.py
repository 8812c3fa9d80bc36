"""Server-streaming RPCs against a real grpcio server and client on loopback: a handler returning
an Observable or an async iterator is a stream, the client's cold Observable reads it at its
Observer's pace, flow control holds a producer back while the reader stalls (bounded buffers on
both sides), the overflow policies of an Observable source, cancellation, deadlines, errors, a
graceful stop with a stream in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pydantic
import pytest
import reactivex
from reactivex import Observable
from reactivex.subject import Subject

from reactive_services import Controller, InMemoryBroker, Microservice, message_pattern, track
from reactive_services.errors import RemoteError, RequestTimeoutError
from reactive_services.grpc import SERVICE, GrpcClient, GrpcServer
from reactive_services.testing import collect, wait_for

pytestmark = pytest.mark.timeout(60)

#: Bytes of each message of the flow-control tests.
BLOB = 1024
#: grpc grows the HTTP/2 windows with bandwidth-delay probing (to megabytes on loopback); the
#: flow-control tests turn it off so that the bound they check is the plain 64 KiB window.
NO_BDP = [("grpc.http2.bdp_probe", 0)]


class Tick(pydantic.BaseModel):
    n: int


class Streams(Controller):
    def __init__(self) -> None:
        self.produced = 0
        self.closed: list[str] = []
        self.subject: Subject[Any] = Subject()

    @message_pattern("ticks")
    def ticks(self, payload: dict[str, int]) -> Observable[dict[str, int]]:
        return reactivex.from_iterable({"n": n} for n in range(payload["count"]))

    @message_pattern("blobs")
    async def blobs(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            for n in range(payload["count"]):
                self.produced += 1
                yield {"n": n, "pad": "x" * BLOB}
                if payload.get("pause"):
                    await asyncio.sleep(payload["pause"])
        finally:
            self.closed.append(payload.get("id", "blobs"))

    @message_pattern("hot")
    def hot(self, payload: Any) -> Observable[Any]:
        return self.subject

    @message_pattern("broken")
    async def broken(self, payload: Any) -> AsyncIterator[int]:
        yield 1
        raise LookupError("the source broke after one value")


async def serve(controller: Streams, **options: Any) -> tuple[GrpcServer, GrpcClient, Callable[[], Any]]:
    service = Microservice(InMemoryBroker(), [controller], name="streams")
    server = GrpcServer([service], **options)
    await server.start()
    client = GrpcClient(server.address, options=options.get("options", ()))

    async def close() -> None:
        await client.close()
        await server.stop(0)

    return server, client, close


@pytest.fixture
async def served() -> AsyncIterator[tuple[Streams, GrpcServer, GrpcClient]]:
    controller = Streams()
    server, client, close = await serve(controller)
    try:
        yield controller, server, client
    finally:
        await close()


async def test_an_observable_handler_is_a_stream_and_send_gets_its_last_value(
    served: tuple[Streams, GrpcServer, GrpcClient],
) -> None:
    _, server, client = served
    assert server.stream_methods == ["blobs", "broken", "hot", "ticks"]
    got = await collect(client.stream("ticks", {"count": 5}, reply_model=Tick))
    assert got.items == [Tick(n=n) for n in range(5)] and got.completed and got.error is None
    assert await client.send("ticks", {"count": 5}) == {"n": 4}  # the broker's answer: the last value
    empty = await collect(client.stream("ticks", {"count": 0}))
    assert empty.items == [] and empty.completed
    # a source emitting while subscribed (a result already in memory) is not held to stream_buffer
    many = await collect(client.stream("ticks", {"count": 1000}))
    assert [v["n"] for v in many.items] == list(range(1000)) and server.stream_buffer == 256
    assert server.streamed["ticks"] == 1005 and server.calls["ticks"] == 4  # send's one reply is no stream message


async def test_a_stream_error_and_bad_input_come_back_as_statuses(
    served: tuple[Streams, GrpcServer, GrpcClient],
) -> None:
    _, _, client = served
    broken = await collect(client.stream("broken", None))
    assert broken.items == [1]
    assert isinstance(broken.error, RemoteError)
    assert broken.error.remote_type == "LookupError"
    assert broken.error.remote_message == "the source broke after one value"
    not_json = await collect(client.stream("ticks", b"{nope"))
    assert isinstance(not_json.error, RemoteError) and not_json.error.remote_type == "DecodeError"
    unknown = await collect(client.stream("nothing", {}))
    assert isinstance(unknown.error, RemoteError) and unknown.error.remote_type == "UNIMPLEMENTED"


async def test_a_stalled_reader_stops_the_producer_and_it_resumes_when_reading_again() -> None:
    controller = Streams()
    server, client, close = await serve(controller, options=NO_BDP)
    try:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        received: list[int] = []

        def on_next(value: dict[str, Any]) -> None:
            received.append(value["n"])
            if len(received) == 10:
                track(gate)  # the Observer is busy with the 10th value: the client reads no further

        done = asyncio.Event()
        client.stream("blobs", {"count": 3000}).subscribe(on_next, lambda e: done.set(), done.set)
        await wait_for(lambda: len(received) == 10)
        await _settled(lambda: controller.produced)
        ahead = controller.produced - len(received)
        # what the stalled call holds: the 64 KiB windows of the two ends, one message being sent
        # and one read; nowhere near the 3,000 messages the producer would make
        assert ahead * BLOB <= 4 * 65536, ahead
        gate.set_result(None)
        await asyncio.wait_for(done.wait(), 30)
        assert received == list(range(3000))
        assert controller.closed == ["blobs"]
    finally:
        await close()


async def test_an_observable_source_overflowing_its_buffer_ends_the_call_with_resource_exhausted() -> None:
    controller = Streams()
    server, client, close = await serve(controller, options=NO_BDP, stream_buffer=16)
    try:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        received: list[int] = []
        errors: list[Exception] = []

        def on_next(value: dict[str, Any]) -> None:
            received.append(value["n"])
            if len(received) == 1:
                track(gate)

        client.stream("hot", None).subscribe(on_next, errors.append)
        await wait_for(lambda: bool(controller.subject.observers))
        pushed = 0
        while controller.subject.observers and pushed < 100_000:  # until the server lets go of it
            controller.subject.on_next({"n": pushed, "pad": "x" * BLOB})
            pushed += 1
            if pushed % 8 == 0:
                await asyncio.sleep(0)
        assert not controller.subject.observers  # the overflow disposed the subscription
        assert server.max_buffered == 16
        # the status follows the messages already in flight: the client gets it once it reads on
        gate.set_result(None)
        await wait_for(lambda: bool(errors))
        assert isinstance(errors[0], RemoteError) and errors[0].remote_type == "SlowConsumer"
        assert server.overflowed == {"hot": 1}
        assert received == list(range(len(received))) and len(received) < pushed
    finally:
        await close()


async def test_drop_oldest_keeps_the_call_and_counts_what_it_dropped() -> None:
    controller = Streams()
    server, client, close = await serve(controller, options=NO_BDP, stream_buffer=16, overflow="drop_oldest")
    try:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        received: list[int] = []
        done = asyncio.Event()

        def on_next(value: dict[str, Any]) -> None:
            received.append(value["n"])
            if len(received) == 1:
                track(gate)

        client.stream("hot", None).subscribe(on_next, lambda e: done.set(), done.set)
        await wait_for(lambda: bool(controller.subject.observers))
        for n in range(2000):
            controller.subject.on_next({"n": n, "pad": "x" * BLOB})
            if n % 8 == 0:
                await asyncio.sleep(0)
        assert server.max_buffered == 16 and server.dropped["hot"] > 0
        controller.subject.on_completed()
        gate.set_result(None)
        await asyncio.wait_for(done.wait(), 30)
        assert received[-16:] == list(range(2000 - 16, 2000))  # the newest buffered ones made it
        assert len(received) + server.dropped["hot"] == 2000 and received == sorted(received)
    finally:
        await close()


async def test_disposing_a_stream_cancels_the_call_on_the_server(
    served: tuple[Streams, GrpcServer, GrpcClient],
) -> None:
    controller, server, client = served
    received: list[Any] = []
    subscription = client.stream("blobs", {"count": 10**9, "pause": 0.01, "id": "endless"}).subscribe(received.append)
    await wait_for(lambda: len(received) >= 3)
    subscription.dispose()
    await wait_for(lambda: controller.closed == ["endless"])  # the generator was closed
    assert server.cancelled == {"blobs": 1}
    hot = client.stream("hot", None).subscribe()
    await wait_for(lambda: bool(controller.subject.observers))
    hot.dispose()
    await wait_for(lambda: not controller.subject.observers)  # the Observable was disposed
    assert server.cancelled == {"blobs": 1, "hot": 1}


async def test_a_streams_deadline_is_a_request_timeout(served: tuple[Streams, GrpcServer, GrpcClient]) -> None:
    controller, _, client = served
    got = await collect(client.stream("blobs", {"count": 10**9, "pause": 0.02, "id": "late"}, timeout=0.3))
    assert len(got.items) >= 1 and isinstance(got.error, RequestTimeoutError)
    await wait_for(lambda: controller.closed == ["late"])


async def test_a_graceful_stop_lets_a_stream_in_flight_finish(served: tuple[Streams, GrpcServer, GrpcClient]) -> None:
    _, server, client = served
    received: list[int] = []
    done = asyncio.Event()
    client.stream("blobs", {"count": 20, "pause": 0.01}).subscribe(
        lambda v: received.append(v["n"]), lambda e: done.set(), done.set
    )
    await wait_for(lambda: len(received) >= 1)
    await server.stop(grace_s=10.0)
    await asyncio.wait_for(done.wait(), 10)
    assert received == list(range(20))


async def test_a_raw_grpc_client_reads_the_stream(served: tuple[Streams, GrpcServer, GrpcClient]) -> None:
    _, server, _ = served
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = channel.unary_stream(f"/{SERVICE}/ticks")(b'{"count": 3}')
        assert [m async for m in call] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


async def _settled(read: Callable[[], int], quiet_checks: int = 10) -> None:
    """Wait until ``read()`` stays the same over ``quiet_checks`` checks 50 ms apart."""
    last, same = read(), 0
    while same < quiet_checks:
        await asyncio.sleep(0.05)
        now = read()
        same = same + 1 if now == last else 0
        last = now
