"""The hub at scale: 1,000 real websocket clients on loopback, 100 of which never read.

- 900 readers (websockets clients) each subscribe to one of 4 channels and must receive every
  event of their channel, in order;
- 100 stalled clients are raw TCP sockets that do the websocket handshake, subscribe, then
  never read again; the server must close each of them (``overflow="close"``, 1013) once its
  queue is full, without the readers losing or reordering anything;
- the server's buffering stays bounded all along: each client's queue <= ``queue_size``
  frames and each transport write buffer <= ``write_limit`` + one frame.

Linux autotunes a loopback socket's send buffer up to ~4 MB, so a stalled client would need
~4 MB of events before the server notices it; the test pins ``SO_SNDBUF`` of the server's
sockets at 8 KiB (and ``SO_RCVBUF`` of the stalled clients at 4 KiB), as on a host with small
socket buffers, so that a stalled client shows after ~100 events of 1 KiB.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as raw_connect
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from reactive_services.adapters.websocket import Connection, WebSocketServer, WebSocketsTransport, encode_subscribe

pytestmark = pytest.mark.timeout(120)

CLIENTS = 1000
STALLED_EVERY = 10  # clients 0, 10, 20, ... never read: 100 of them
CHANNELS = [f"ch{k}" for k in range(4)]
QUEUE_SIZE = 32
WRITE_LIMIT = 16 * 1024
PAD = "p" * 1024
LAG = 2  # the publisher waits while any reader is more than LAG events behind on its channel
MAX_ROUNDS = 600  # one event per channel per round


def channel_of(i: int) -> str:
    # Blocks of 10 consecutive clients share a channel, so the stalled ones (one per block)
    # are spread over all the channels.
    return CHANNELS[(i // 10) % len(CHANNELS)]


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target < needed:
            pytest.fail(f"needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def open_stalled_client(url: str, channels: list[str]) -> socket.socket:
    """Handshake and subscribe over a raw socket (websockets' sans-I/O client protocol makes
    the bytes), then return the socket, which nobody reads from."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (uri.host, uri.port))
    protocol = ClientProtocol(uri)
    protocol.send_request(protocol.connect())
    for data in protocol.data_to_send():
        await loop.sock_sendall(sock, data)
    while protocol.state is State.CONNECTING:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        assert data, "the server closed during the handshake"
        protocol.receive_data(data)
    assert protocol.state is State.OPEN, protocol.handshake_exc
    protocol.send_text(encode_subscribe(channels))
    for data in protocol.data_to_send():
        await loop.sock_sendall(sock, data)
    return sock


async def test_1000_clients_100_stalled() -> None:
    raise_fd_limit(4 * CLIENTS + 256)
    started = time.monotonic()
    server = WebSocketServer(
        queue_size=QUEUE_SIZE, overflow="close", close_timeout=1.0, ping_interval=None, write_limit=WRITE_LIMIT
    )

    def small_kernel_buffer(conn: Connection) -> None:
        assert isinstance(conn.transport, WebSocketsTransport)
        sock = conn.transport.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)

    server.connections.subscribe(small_kernel_buffer)
    await server.start()

    stalled_ids = set(range(0, CLIENTS, STALLED_EVERY))
    readers: dict[int, ClientConnection] = {}
    stalled: dict[int, socket.socket] = {}
    seqs: dict[int, list[int]] = {}
    reader_tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(64)  # below the listen backlog (100)

    async def read(i: int, ws: ClientConnection) -> None:
        async for data in ws:
            frame = orjson.loads(data)
            assert frame["type"] == "event" and frame["channel"] == channel_of(i), frame
            seqs[i].append(frame["event"]["seq"])

    async def open_client(i: int) -> None:
        async with gate:
            if i in stalled_ids:
                stalled[i] = await open_stalled_client(server.url, [channel_of(i)])
                return
            ws = await raw_connect(server.url, proxy=None, ping_interval=None, open_timeout=30)
            await ws.send(encode_subscribe([channel_of(i)]).decode())
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert reply == {"type": "subscribed", "channels": [channel_of(i)]}
            readers[i] = ws
            seqs[i] = []
            reader_tasks.append(asyncio.create_task(read(i, ws)))

    try:
        await asyncio.gather(*(open_client(i) for i in range(CLIENTS)))
        while sum(server.subscribers(c) for c in CHANNELS) < CLIENTS:  # the stalled subscribes
            await asyncio.sleep(0.01)
        assert len(server.clients) == CLIENTS and len(readers) == CLIENTS - len(stalled_ids)
        connected = time.monotonic()

        published = dict.fromkeys(CHANNELS, 0)
        frame_len = len(orjson.dumps({"type": "event", "channel": "ch0", "event": {"seq": 0, "pad": PAD}}))
        peak_queued = peak_buffer = 0
        rounds = extra = 0
        while extra < 10:  # until every stalled client is closed, then 10 more rounds
            assert rounds < MAX_ROUNDS, f"only {server.hub.slow_clients_closed} stalled clients closed"
            for channel in CHANNELS:
                server.hub.on_next((channel, {"seq": published[channel], "pad": PAD}))
                published[channel] += 1
            rounds += 1
            if server.hub.slow_clients_closed == len(stalled_ids):
                extra += 1
            # Bounded memory: queues and transport buffers, over every open connection.
            clients = server.clients
            queued = [c.queued for c in clients]
            assert max(queued) <= QUEUE_SIZE and sum(queued) <= len(clients) * QUEUE_SIZE
            buffers = [c.transport.write_buffer_size for c in clients]  # type: ignore[attr-defined]
            assert max(buffers) <= WRITE_LIMIT + frame_len + 256
            peak_queued = max(peak_queued, sum(queued))
            peak_buffer = max(peak_buffer, sum(buffers))
            # Pace the publisher at the readers' speed (they share this event loop).
            await asyncio.sleep(0)
            while any(len(seqs[i]) < published[channel_of(i)] - LAG for i in readers):
                await asyncio.sleep(0.002)
        published_at = time.monotonic()

        # Every reader gets every event of its channel, in order.
        deadline = time.monotonic() + 30
        while any(len(seqs[i]) < published[channel_of(i)] for i in readers):
            assert time.monotonic() < deadline, "readers did not get everything"
            await asyncio.sleep(0.01)
        for i in readers:
            assert seqs[i] == list(range(published[channel_of(i)])), f"client {i}"

        # Every stalled client was closed (1013, then aborted after close_timeout); no reader was.
        assert server.hub.slow_clients_closed == server.slow_clients_closed == len(stalled_ids)
        deadline = time.monotonic() + 10
        while len(server.clients) > len(readers):
            assert time.monotonic() < deadline, f"{len(server.clients)} clients still connected"
            await asyncio.sleep(0.05)
        reader_ports = {ws.local_address[1] for ws in readers.values()}
        assert {c.remote_address[1] for c in server.clients} == reader_ports
        assert all(c.is_open for c in server.clients)
        assert server.hub.delivered >= sum(len(s) for s in seqs.values())

        # Worst case over the whole run, far below "every event to every client".
        total_events = sum(published.values())
        assert peak_queued <= CLIENTS * QUEUE_SIZE
        print(
            f"\n{CLIENTS} clients connected in {connected - started:.1f}s; {total_events} events"
            f" ({rounds} rounds) -> {sum(len(s) for s in seqs.values())} deliveries in"
            f" {published_at - connected:.1f}s; peak queued {peak_queued} frames,"
            f" peak transport buffers {peak_buffer / 2**20:.2f} MiB"
        )
    finally:
        for sock in stalled.values():
            sock.close()
        await asyncio.gather(*(ws.close() for ws in readers.values()), return_exceptions=True)
        await asyncio.gather(*reader_tasks, return_exceptions=True)
        await asyncio.wait_for(server.stop(), 30)
