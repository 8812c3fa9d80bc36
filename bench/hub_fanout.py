"""Hub fan-out at 1,000 and 10,000 clients: ``NotificationHub`` vs a bare ``websockets.broadcast``
loop, and a reconnect storm (every client drops and resumes from its cursor at once).

One ``WebSocketServer`` (this process) accepts ``--clients`` websocket clients run by a child
process, the load generator (a minimal asyncio client: hand-written handshake and frame parser,
so that the client side costs little). ``--clients 1000,10000`` runs each size in turn and
prints the tables of each. The child opens at most ``--connect-concurrency`` (100) connections
at once: asyncio's listen backlog is 100, and a SYN beyond it is dropped and retried a second
later by the kernel, which would measure the backlog, not the server. File-descriptor limits
are raised to the hard limit in both processes (10,000 clients need ~10,050 in each).

**Fan-out** (``--only fanout``). Every client subscribes to the channel ``fanout``. Then, on the
**same connections**, four measured phases publish ``--events`` events at ``--rate`` events/s
(the offered deliveries/s are clients x rate: keep it within what 2 cores do, e.g. ``--rate 50``
at 1,000 clients, ``--rate 5`` at 10,000; ``--rate 50,5`` gives one rate per size):

  1. hub, every client reading           ``server.hub.on_next(("fanout", event))``
  2. broadcast, every client reading     ``websockets.broadcast(conns, encode_event(...), text=True)``
  3. broadcast, ``--stalled-fraction`` of the clients not reading (``pause_reading()``)
  4. hub, the same clients still not reading (``overflow="close"``: they get closed)

Each event carries its send time (``time.monotonic()``, i.e. CLOCK_MONOTONIC, shared by the
two processes on Linux); the child records ``receive time - send time`` for every delivery.

Printed per phase, the **median of** ``--rounds`` rounds (each round a fresh server and child):
p50 / p99 delivery latency (ms), the offered deliveries/s and those received (by the reading
clients, first send to last receive: the offered rate when the server keeps up), server CPU
per delivery (us, ``time.process_time`` of this process over the phase, so system time of the
socket writes included, minus the CPU of the bench's own memory sampling) and the capacity it
implies (deliveries/s for one core), the load generator's CPU over the phase (% of one core:
near 100, the child process is the bottleneck, not the server), RSS growth of this process over the phase (MiB, peak
sampled every 10-100 ms minus the start; optionally the ``tracemalloc`` peak), and the peak of
what the server held for the clients (MiB: queued frames + transport write buffers, sampled);
then hub / broadcast ratios of those medians. Between phases 3 and 4 the stalled clients read
their backlog and the server's buffers empty, so both start alike; the RSS of phase 4 may still
reuse memory freed after phase 3 (the peak-buffered column does not depend on that).

Kernel socket buffers: Linux autotunes a loopback socket's send buffer up to ~4 MB, so a
client that stops reading would absorb ~4 MB before the server sees it; ``--sndbuf`` (default
16 KiB, 0 = OS default) pins the server sockets' ``SO_SNDBUF`` and the stalled clients use a
4 KiB ``SO_RCVBUF``, so that stalled clients show within a few hundred events.

**Reconnect storm** (``--only storm``). A server whose hub has a ``NotificationLog`` over a
one-partition topic of ``--broker memory`` (an ``InMemoryBroker`` in this process, the default)
or ``--broker kafka`` (``--kafka BOOTSTRAP``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a local
broker started with ``reactive_services.testing.local_kafka`` and stopped afterwards), fed by
``log.live()``: events are published to the topic (``emit_batch`` / ``emit``), the hub fans them
out with cursors, every client keeps the cursor of the last event it got. Each round, on the same
server and child:

  a. live burst (the baseline): ``--missed`` events published at once while every client is
     connected; time until every client has all of them, server CPU.
  b. storm: the child aborts every connection at once (TCP RST); ``--missed`` events are
     published meanwhile (the hub fans them out to nobody); then every client reconnects at
     once and subscribes with ``since=<its last cursor>`` while live events go on at the size's
     ``--rate``. Measured from the reconnect order: when every client is subscribed again, when
     every client has the last missed event (p50 / p99 / max over clients, s; and the load
     generator's CPU over that time, % of one core), the missed and
     duplicate events per client (over the round, live ones included, checked by sequence
     number once every client has the last live event: **must be 0 / 0**), ``recovery_failed``
     frames (must be 0), server CPU (s, and us per caught-up delivery), RSS peak growth, and
     what it costs the broker: catch-up readers opened (each a consumer of its own on Kafka,
     ``max_readers`` at once at most: ``--max-readers``, default 64, the rest wait; none for
     the clients resumed from the log's in-memory history, ``--history``, default 10,000
     frames: the "from memory" column; ``--history 0`` makes every resume read the log),
     the peak of readers open at once, ``read`` calls, records read, offset requests
     (``beginning_offsets`` / ``end_offsets``: one each per resuming client); on Kafka also the
     broker process's CPU seconds (``/proc/<pid>/stat``, utime + stime) and the peak of its open
     file descriptors (its connections, sampled).

Then the storm / live-burst ratios of the time and CPU (medians of the rounds).

On 2 shared cores the numbers are noisy; compare ratios, and rerun::

    python bench/hub_fanout.py [--clients 1000[,10000]] [--rounds 3] [--events 300] [--rate 50[,5]]
                               [--stalled-fraction 0.1] [--payload 1024] [--only fanout|storm]
                               [--broker memory|kafka] [--kafka BOOTSTRAP] [--missed 100]
                               [--max-readers 64] [--history 10000] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactive_services.adapters.websocket import (  # noqa: E402
    Connection,
    Notification,
    NotificationLog,
    WebSocketServer,
    WebSocketsTransport,
    encode_event,
)

CHANNEL = "fanout"
TOPIC = "hub-fanout-storm"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
MiB = 2**20


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"{needed} file descriptors needed, the hard limit is {hard} (raise it: ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# -- the child process: N minimal websocket clients --------------------------------------------


def masked_text_frame(payload: bytes) -> bytes:
    key = os.urandom(4)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    n = len(payload)
    assert n < 65536
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + key + masked


class Stats:
    def __init__(self) -> None:
        self.phase = -1
        self.latencies: list[float] = []
        self.first_recv = self.last_recv = 0.0


class Track:
    """One client slot of the storm, kept across its reconnections: the last cursor and
    sequence number it got, duplicates and gaps, when it reached the target sequence number."""

    __slots__ = ("cursor", "dups", "failed", "gaps", "last_seq", "reached_at", "subscribed_at", "target")

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.last_seq = -1
        self.dups = self.gaps = self.failed = 0
        self.target = 0
        self.reached_at = self.subscribed_at = 0.0


class BenchClient(asyncio.Protocol):
    """Handshake, subscribe to ``fanout`` (with ``since`` when resuming), then parse server
    frames (unmasked): record the latency of each fan-out event of the current phase, and the
    sequence number and cursor of each storm event."""

    def __init__(
        self, host: str, port: int, stats: Stats, track: Track, subscribed: asyncio.Future[None], since: str | None
    ) -> None:
        self.host, self.port, self.stats, self.track, self.subscribed = host, port, stats, track, subscribed
        self.since = since
        self.buf = bytearray()
        self.handshaken = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.stalled = False
        self.received = 0  # events of the current phase
        self.next_seq = 0
        self.out_of_order = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("closed before subscribing"))

    def reset(self) -> None:
        self.received = 0
        self.next_seq = 0
        self.out_of_order = 0

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buf.startswith(b"HTTP/1.1 101"), bytes(buf[:100])
            del buf[: end + 4]
            self.handshaken = True
            assert self.transport is not None
            subscribe: dict[str, Any] = {"op": "subscribe", "channels": [CHANNEL]}
            if self.since is not None:
                subscribe["since"] = self.since
            self.transport.write(masked_text_frame(orjson.dumps(subscribe)))
        pos, end = 0, len(buf)
        stats, track = self.stats, self.track
        while end - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode != 1:
                continue
            frame = orjson.loads(payload)
            kind = frame["type"]
            if kind == "event":
                event = frame["event"]
                if event["p"] == "storm":
                    track.cursor = frame["cursor"]
                    s = event["s"]
                    if s <= track.last_seq:
                        track.dups += 1
                        continue
                    if s > track.last_seq + 1:
                        track.gaps += s - track.last_seq - 1
                    track.last_seq = s
                    if s >= track.target and not track.reached_at:
                        track.reached_at = now
                    continue
                if event["p"] != stats.phase:
                    continue
                stats.latencies.append(now - event["t"])
                if not stats.first_recv:
                    stats.first_recv = now
                stats.last_recv = now
                if event["s"] != self.next_seq:
                    self.out_of_order += 1
                self.next_seq = event["s"] + 1
                self.received += 1
            elif kind == "subscribed":
                if track.cursor is None:
                    track.cursor = frame.get("cursor")
                track.subscribed_at = now
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif kind == "recovery_failed":
                track.failed += 1
                track.cursor = frame.get("cursor", track.cursor)
        del buf[:pos]


async def child_main(url: str, clients: int, stall_every: int, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    raise_fd_limit(clients + 256)
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stats = Stats()
    tracks = [Track() for _ in range(clients)]
    conns: list[BenchClient] = [None] * clients  # type: ignore[list-item]
    gate = asyncio.Semaphore(concurrency)

    async def open_client(i: int, since: str | None) -> None:
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if stall_every and i % stall_every == 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, int(port)))
            subscribed = loop.create_future()
            _, client = await loop.create_connection(
                lambda: BenchClient(host, int(port), stats, tracks[i], subscribed, since), sock=sock
            )
            conns[i] = client
            await asyncio.wait_for(subscribed, 60)

    await asyncio.gather(*(open_client(i, None) for i in range(clients)))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        obj["cpu"] = time.process_time()  # this process's CPU so far: the load generator's share
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": len(conns)})
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "phase":
            stats.phase = cmd["id"]
            stats.latencies = []
            stats.first_recv = stats.last_recv = 0.0
            for c in conns:
                c.reset()
            if cmd["stall"]:
                for i, c in enumerate(conns):
                    if stall_every and i % stall_every == 0 and not c.stalled and c.transport is not None:
                        c.stalled = True
                        c.transport.pause_reading()
            reply({"stalled": sum(c.stalled for c in conns)})
        elif cmd["cmd"] == "resume":  # the stalled clients read again (and drop the old events)
            for c in conns:
                if c.stalled and c.transport is not None:
                    c.stalled = False
                    c.transport.resume_reading()
            reply({"resumed": True})
        elif cmd["cmd"] == "report":
            expected = cmd["events"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(c.received >= expected for c in conns if not c.stalled and not c.closed):
                    break
                await asyncio.sleep(0.01)
            readers = [c for c in conns if not c.stalled]
            lat = sorted(stats.latencies)
            reply(
                {
                    "readers": len(readers),
                    "readers_closed": sum(c.closed for c in readers),
                    "stalled_closed": sum(c.closed for c in conns if c.stalled),
                    "received": len(lat),
                    "missing": sum(max(0, expected - c.received) for c in readers),
                    "out_of_order": sum(c.out_of_order for c in readers),
                    "p50_ms": percentile(lat, 0.50) * 1e3,
                    "p99_ms": percentile(lat, 0.99) * 1e3,
                    "max_ms": (lat[-1] if lat else float("nan")) * 1e3,
                    "mean_ms": (statistics.fmean(lat) if lat else float("nan")) * 1e3,
                    "first_recv": stats.first_recv,
                    "last_recv": stats.last_recv,
                }
            )
        # the storm's commands
        elif cmd["cmd"] == "arm":  # the next target sequence number (and a new round: reset)
            for t in tracks:
                t.target = cmd["target"]
                t.reached_at = 0.0
                if cmd.get("reset"):
                    t.dups = t.gaps = t.failed = 0
            reply({"armed": True})
        elif cmd["cmd"] == "wait":  # until every client has the target, or the timeout
            deadline = time.monotonic() + cmd["timeout"]
            while time.monotonic() < deadline and not all(t.last_seq >= t.target for t in tracks):
                await asyncio.sleep(0.01)
            reached = sorted(t.reached_at for t in tracks if t.last_seq >= t.target)
            reply(
                {
                    "clients": len(tracks),
                    "reached": len(reached),
                    "at_p50": percentile(reached, 0.50),
                    "at_p99": percentile(reached, 0.99),
                    "at_max": reached[-1] if reached else float("nan"),
                    "behind": sum(max(0, t.target - t.last_seq) for t in tracks),
                    "dups": sum(t.dups for t in tracks),
                    "gaps": sum(t.gaps for t in tracks),
                    "failed": sum(t.failed for t in tracks),
                    "clients_with_missed_or_dups": sum(bool(t.dups or t.gaps or t.last_seq < t.target) for t in tracks),
                }
            )
        elif cmd["cmd"] == "drop":  # every connection cut at once (RST)
            for c in conns:
                if c.transport is not None:
                    c.transport.abort()
            while not all(c.closed for c in conns):
                await asyncio.sleep(0.01)
            reply({"dropped": len(conns)})
        elif cmd["cmd"] == "reconnect":  # every client at once, each from its last cursor
            results = await asyncio.gather(
                *(open_client(i, tracks[i].cursor) for i in range(clients)), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            subscribed = sorted(t.subscribed_at for t in tracks)
            reply(
                {
                    "errors": len(errors),
                    "first_error": repr(errors[0]) if errors else None,
                    "subscribed_p50": percentile(subscribed, 0.5),
                    "subscribed_max": subscribed[-1],
                }
            )
        elif cmd["cmd"] == "quit":
            break
    for c in conns:
        if c.transport is not None:
            c.transport.abort()


# -- the parent: server, publisher, measurements ------------------------------------------------


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, args: argparse.Namespace, server: WebSocketServer, clients: int, stall_every: int) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            server.url,
            str(clients),
            str(stall_every),
            str(args.connect_concurrency),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(proc)
        t = time.monotonic()
        try:
            ready = await child.read(timeout=300)
            while server.subscribers(CHANNEL) < clients:
                await asyncio.sleep(0.01)
        except BaseException:
            await child.close()
            raise
        print(f"  {ready['ready']} clients connected and subscribed in {time.monotonic() - t:.1f}s", file=sys.stderr)
        return child

    async def ask(self, obj: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def read(self, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the client process died")
        return dict(json.loads(line))

    async def close(self) -> None:
        proc = self.proc
        try:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b'{"cmd": "quit"}\n')
                await proc.stdin.drain()
                await asyncio.wait_for(proc.wait(), 30)
        except (OSError, TimeoutError):
            pass
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


class Sampler:
    """Peaks of this process's RSS, of what the server holds for its clients (queued frames x
    ``frame_len`` + write buffers) and, with ``kafka_pid``, of the Kafka broker's open file
    descriptors, sampled every 10 ms (100 ms from 10,000 clients on). ``cpu`` is the CPU the
    sampling itself took (subtracted from the phase's)."""

    def __init__(self, server: WebSocketServer, frame_len: int, kafka_pid: int | None = None) -> None:
        self.server, self.frame_len, self.kafka_pid = server, frame_len, kafka_pid
        self.start_rss = rss()
        self.rss = self.start_rss
        self.buffered = 0
        self.kafka_fds = 0
        self.cpu = 0.0
        self.interval = max(0.01, min(0.1, len(server.clients) / 100_000))
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            c0 = time.process_time()
            self.rss = max(self.rss, rss())
            buffered = 0
            for conn in self.server.clients:
                buffered += conn.queued * self.frame_len
                transport = conn.transport
                if isinstance(transport, WebSocketsTransport):
                    buffered += transport.write_buffer_size
            self.buffered = max(self.buffered, buffered)
            if self.kafka_pid is not None:
                try:
                    self.kafka_fds = max(self.kafka_fds, len(os.listdir(f"/proc/{self.kafka_pid}/fd")))
                except OSError:
                    pass
            self.cpu += time.process_time() - c0
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def run_phase(
    args: argparse.Namespace,
    server: WebSocketServer,
    child: Child,
    size: dict[str, Any],
    phase_id: int,
    name: str,
    mode: str,
    stall: bool,
    events: int,
) -> dict[str, Any]:
    from websockets.asyncio.server import broadcast

    answer = await child.ask({"cmd": "phase", "id": phase_id, "stall": stall})
    await asyncio.sleep(0.2)  # let the pause take effect
    pad = "x" * args.payload
    frame_len = len(encode_event(CHANNEL, {"p": phase_id, "s": 0, "t": time.monotonic(), "pad": pad}))
    hub = server.hub
    closed_before, delivered_before = hub.slow_clients_closed, hub.delivered
    if args.tracemalloc:
        tracemalloc.start()
        tracemalloc.reset_peak()
    sampler = Sampler(server, frame_len)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    interval = 1.0 / size["rate"]
    # The baseline writes to the same connections, listed once per phase (the hub iterates
    # its channel index the same way).
    conns = [c.transport.connection for c in server.clients if isinstance(c.transport, WebSocketsTransport)]
    offered = len(conns)
    for seq in range(events):
        now = time.monotonic()
        event = {"p": phase_id, "s": seq, "t": now, "pad": pad}
        if mode == "hub":
            hub.on_next((CHANNEL, event))
        else:
            broadcast(conns, encode_event(CHANNEL, event), text=True)
        delay = t0 + (seq + 1) * interval - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
    report = await child.ask({"cmd": "report", "events": events})
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    await sampler.stop()
    cpu -= sampler.cpu
    traced_peak = None
    if args.tracemalloc:
        traced_peak = tracemalloc.get_traced_memory()[1] / MiB
        tracemalloc.stop()
    received = report["received"]
    span = (report["last_recv"] - t0) if report["last_recv"] else float("nan")
    return {
        "phase": name,
        "mode": mode,
        "stalled": answer["stalled"] if stall else 0,
        "events": events,
        "readers": report["readers"],
        "received": received,
        "missing": report["missing"],
        "out_of_order": report["out_of_order"],
        "readers_closed": report["readers_closed"],
        "p50_ms": report["p50_ms"],
        "p99_ms": report["p99_ms"],
        "max_ms": report["max_ms"],
        "offered_per_s": offered * size["rate"],
        "deliveries_per_s": received / span if span else float("nan"),
        "client_cpu_pct": (report["cpu"] - answer["cpu"]) / wall * 100,
        "cpu_us_per_delivery": cpu / max(1, received) * 1e6,
        "capacity_per_s": max(1, received) / cpu if cpu > 0 else float("nan"),
        "rss_delta_mib": (sampler.rss - sampler.start_rss) / MiB,
        "tracemalloc_peak_mib": traced_peak,
        "peak_buffered_mib": sampler.buffered / MiB,
        "slow_clients_closed": hub.slow_clients_closed - closed_before if mode == "hub" else 0,
        "hub_delivered": hub.delivered - delivered_before if mode == "hub" else None,
    }


def quiet_logs() -> None:
    # one warning per closed client, one info line per resumed client
    logging.getLogger("reactive_services.adapters.websocket").setLevel(logging.ERROR)
    logging.getLogger("websockets").setLevel(logging.ERROR)


def pin_sndbuf(args: argparse.Namespace) -> Any:
    def pin(conn: Connection) -> None:
        if args.sndbuf and isinstance(conn.transport, WebSocketsTransport):
            sock = conn.transport.connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)

    return pin


async def fanout_round(args: argparse.Namespace, size: dict[str, Any]) -> list[dict[str, Any]]:
    """One round of the four fan-out phases: a fresh server and child."""
    clients = size["clients"]
    raise_fd_limit(clients + 256)
    quiet_logs()
    stall_every = round(1 / args.stalled_fraction) if args.stalled_fraction > 0 else 0
    server = WebSocketServer(
        queue_size=args.queue_size, overflow="close", close_timeout=1.0, ping_interval=None, max_message_size=4096
    )
    server.connections.subscribe(pin_sndbuf(args))
    await server.start()
    try:
        child = await Child.start(args, server, clients, stall_every)
        try:
            # Warm-up (not reported): both paths, a few events.
            await run_phase(args, server, child, size, 0, "warm-up", "hub", False, 20)
            await run_phase(args, server, child, size, 1, "warm-up", "broadcast", False, 20)
            stalled_label = f"{args.stalled_fraction:.0%} stalled"
            plan = [
                ("hub", "hub", False),
                ("broadcast", "broadcast", False),
                (f"broadcast, {stalled_label}", "broadcast", True),
                (f"hub, {stalled_label}", "hub", True),
            ]
            results = []
            for k, (name, mode, stall) in enumerate(plan, start=2):
                print(f"  phase: {name} ...", file=sys.stderr)
                results.append(await run_phase(args, server, child, size, k, name, mode, stall, size["events"]))
                if stall and mode == "broadcast":
                    # Same starting point for the hub: the stalled clients read their backlog,
                    # the server's buffers empty, then the same clients stall again.
                    await child.ask({"cmd": "resume"})
                    await drained(server)
        finally:
            await child.close()
    finally:
        await server.stop()
    return results


async def drained(server: WebSocketServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            c.queued == 0 and (not isinstance(c.transport, WebSocketsTransport) or c.transport.write_buffer_size == 0)
            for c in server.clients
        ):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # and the kernel buffers


# -- the reconnect storm -----------------------------------------------------------------------


class CountingBroker:
    """The broker the NotificationLog reads through: counts the catch-up readers (each a consumer
    of its own on Kafka), their ``read`` calls and records, and the offset requests."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self.readers_opened = 0
        self.open_readers = 0
        self.peak_readers = 0
        self.reads = 0
        self.records = 0
        self.offset_requests = 0
        self.reader_start_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def counters(self) -> dict[str, float]:
        return {
            k: getattr(self, k) for k in ("readers_opened", "reads", "records", "offset_requests", "reader_start_s")
        }

    async def end_offsets(self, topic: str) -> dict[int, int]:
        self.offset_requests += 1
        return dict(await self._broker.end_offsets(topic))

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        self.offset_requests += 1
        return dict(await self._broker.beginning_offsets(topic))

    async def read_log(self, positions: Mapping[tuple[str, int], int], *, decode: Any = "json") -> CountingReader:
        t = time.monotonic()
        reader = await self._broker.read_log(positions, decode=decode)
        self.reader_start_s += time.monotonic() - t
        self.readers_opened += 1
        self.open_readers += 1
        self.peak_readers = max(self.peak_readers, self.open_readers)
        return CountingReader(reader, self)


class CountingReader:
    def __init__(self, reader: Any, counts: CountingBroker) -> None:
        self._reader, self._counts = reader, counts

    @property
    def positions(self) -> dict[tuple[str, int], int]:
        return dict(self._reader.positions)

    async def read(self, max_records: int, timeout_s: float = 0.5) -> list[Any]:
        out = await self._reader.read(max_records, timeout_s)
        self._counts.reads += 1
        self._counts.records += len(out)
        return list(out)

    async def close(self) -> None:
        self._counts.open_readers -= 1
        await self._reader.close()


def proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def to_notification(message: Any) -> Notification:
    return Notification(CHANNEL, message.value)


async def storm_rounds(
    args: argparse.Namespace, size: dict[str, Any], broker: Any, kafka_pid: int | None
) -> list[dict[str, Any]]:
    """``--rounds`` rounds of live burst + storm on one server and child."""
    clients, rate, missed = size["clients"], size["rate"], args.missed
    raise_fd_limit(clients + 512)
    quiet_logs()
    counting = CountingBroker(broker)
    epoch = f"bench-{os.getpid()}-{time.time_ns()}"
    topic = f"{TOPIC}-{epoch}"
    await broker.create_topics([topic], partitions=1)
    log = NotificationLog(
        counting,  # type: ignore[arg-type]
        [topic],
        to_notification,
        epoch=epoch,
        max_readers=args.max_readers,
        poll_timeout_s=0.1,
        history=args.history,
    )
    await log.open()
    server = WebSocketServer(
        queue_size=args.queue_size,
        overflow="close",
        close_timeout=1.0,
        ping_interval=None,
        max_message_size=4096,
        log=log,
    )
    server.connections.subscribe(pin_sndbuf(args))
    await server.start()
    feed = log.live().subscribe(server.hub)
    pad = "x" * args.payload
    seq = 0

    def records(n: int) -> list[tuple[str, Any]]:
        nonlocal seq
        out = [("k", {"p": "storm", "s": s, "t": time.monotonic(), "pad": pad}) for s in range(seq, seq + n)]
        seq += n
        return out

    async def fanned_out() -> None:  # the hub's head at the log's end
        end = (await broker.end_offsets(topic))[0]
        while log.head.get((topic, 0), 0) < end:
            await asyncio.sleep(0.01)

    results = []
    try:
        child = await Child.start(args, server, clients, 0)
        try:
            # warm-up: every client gets events (and their cursors)
            await child.ask({"cmd": "arm", "target": 19, "reset": True})
            await broker.emit_batch(topic, records(20))
            w = await child.ask({"cmd": "wait", "timeout": args.storm_timeout}, timeout=args.storm_timeout + 30)
            assert w["reached"] == clients, w
            frame_len = len(encode_event(CHANNEL, {"p": "storm", "s": 0, "t": 0.0, "pad": pad}, cursor=log.cursor()))
            for r in range(args.rounds):
                print(f"  storm round {r + 1}: live burst ...", file=sys.stderr)
                # a. the live burst: the same number of events, every client connected
                armed = await child.ask({"cmd": "arm", "target": seq + missed - 1, "reset": True})
                cpu0, t0 = time.process_time(), time.monotonic()
                await broker.emit_batch(topic, records(missed))
                w = await child.ask({"cmd": "wait", "timeout": args.storm_timeout}, timeout=args.storm_timeout + 30)
                live = {
                    "live_all_s": w["at_max"] - t0,
                    "live_p50_s": w["at_p50"] - t0,
                    "live_cpu_s": time.process_time() - cpu0,
                    "live_client_cpu_pct": (w["cpu"] - armed["cpu"]) / (w["at_max"] - t0) * 100,
                    "live_reached": w["reached"],
                }
                # b. the storm
                print(f"  storm round {r + 1}: drop, {missed} events, reconnect ...", file=sys.stderr)
                await child.ask({"cmd": "drop"})
                while server.clients:
                    await asyncio.sleep(0.01)
                armed = await child.ask({"cmd": "arm", "target": seq + missed - 1, "reset": True})
                await broker.emit_batch(topic, records(missed))
                await fanned_out()
                before = counting.counters()
                resumed0, failed0, memory0 = log.resumed, log.recoveries_failed, log.resumed_from_history
                kcpu0 = proc_cpu_s(kafka_pid)
                counting.peak_readers = counting.open_readers
                sampler = Sampler(server, frame_len, kafka_pid)
                stop_live = asyncio.Event()

                async def publish_live(stop: asyncio.Event) -> None:
                    k = 0
                    start = time.monotonic()
                    while not stop.is_set():
                        await broker.emit_batch(topic, records(1))
                        k += 1
                        delay = start + k / rate - time.monotonic()
                        try:
                            await asyncio.wait_for(stop.wait(), max(0.0, delay))
                        except TimeoutError:
                            pass

                cpu0, t0 = time.process_time(), time.monotonic()
                live_task = asyncio.create_task(publish_live(stop_live))
                rc = await child.ask({"cmd": "reconnect"}, timeout=args.storm_timeout + 60)
                w = await child.ask({"cmd": "wait", "timeout": args.storm_timeout}, timeout=args.storm_timeout + 30)
                cpu = time.process_time() - cpu0
                kcpu = proc_cpu_s(kafka_pid) - kcpu0
                await sampler.stop()
                cpu -= sampler.cpu
                after = counting.counters()
                peak_readers = counting.peak_readers
                resumed, failed = log.resumed - resumed0, log.recoveries_failed - failed0
                from_memory = log.resumed_from_history - memory0
                # a few more live events, then every client must have every one of them
                await asyncio.sleep(0.5)
                stop_live.set()
                await live_task
                await child.ask({"cmd": "arm", "target": seq - 1})
                final = await child.ask({"cmd": "wait", "timeout": 60}, timeout=90)
                results.append(
                    {
                        **live,
                        "clients": clients,
                        "missed_events": missed,
                        "connect_errors": rc["errors"],
                        "first_error": rc["first_error"],
                        "subscribed_all_s": rc["subscribed_max"] - t0,
                        "caught_up": w["reached"],
                        "caught_up_p50_s": w["at_p50"] - t0,
                        "caught_up_p99_s": w["at_p99"] - t0,
                        "caught_up_all_s": w["at_max"] - t0,
                        "client_cpu_pct": (w["cpu"] - armed["cpu"]) / (w["at_max"] - t0) * 100,
                        "missed_per_client": (final["gaps"] + final["behind"]) / clients,
                        "duplicates_per_client": final["dups"] / clients,
                        "clients_with_missed_or_dups": final["clients_with_missed_or_dups"],
                        "missed_total": final["gaps"] + final["behind"],
                        "duplicates_total": final["dups"],
                        "recovery_failed": final["failed"],
                        "resumed": resumed,
                        "resumed_from_history": from_memory,
                        "log_recoveries_failed": failed,
                        "server_cpu_s": cpu,
                        "cpu_us_per_caught_up_delivery": cpu / max(1, clients * missed) * 1e6,
                        "rss_peak_delta_mib": (sampler.rss - sampler.start_rss) / MiB,
                        "peak_buffered_mib": sampler.buffered / MiB,
                        **{k: after[k] - before[k] for k in after},
                        "peak_readers": peak_readers,
                        "kafka_cpu_s": kcpu,
                        "kafka_fds_peak": sampler.kafka_fds if kafka_pid is not None else None,
                    }
                )
                s = results[-1]
                print(
                    f"  storm round {r + 1}: all caught up in {s['caught_up_all_s']:.2f}s,"
                    f" missed {s['missed_total']}, duplicates {s['duplicates_total']}",
                    file=sys.stderr,
                )
        finally:
            await child.close()
    finally:
        feed.dispose()
        await server.stop()
    return results


def median_rows(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric field: the median of the rounds; other fields: the first round's."""
    out: dict[str, Any] = {}
    for key, first in rounds[0].items():
        values = [r[key] for r in rounds]
        if isinstance(first, int | float) and not isinstance(first, bool) and all(v is not None for v in values):
            out[key] = statistics.median(values)
            if key in ("missing", "out_of_order", "missed_total", "duplicates_total", "recovery_failed"):
                out[key] = max(values)  # the worst round, not the median
        else:
            out[key] = first
    return out


RATIO_KEYS = ("p50_ms", "p99_ms", "capacity_per_s", "cpu_us_per_delivery", "rss_delta_mib", "peak_buffered_mib")


def ratios(hub: dict[str, Any], bcast: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = hub[key], bcast[key]
        # Memory deltas below 0.1 MiB are noise (RSS moves by pages and arenas): no ratio.
        floor = 0.1 if key.endswith("_mib") else 0.0
        out[key] = a / b if b and b > floor and a == a and b == b else None
    return out


def print_fanout(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    cfg = result["config"]
    table = Table(
        title=(
            f"hub fan-out: {cfg['clients']:,} clients, {cfg['events']} events of {cfg['payload']} B at"
            f" {cfg['rate']:g}/s, queue_size {cfg['queue_size']}, SO_SNDBUF {cfg['sndbuf'] or 'OS'};"
            f" medians of {cfg['rounds']} rounds"
        )
    )
    for col in (
        "phase",
        "stalled",
        "p50 ms",
        "p99 ms",
        "offered/s",
        "deliveries/s",
        "CPU us/delivery",
        "capacity/s",
        "load-gen CPU %",
        "RSS delta MiB",
        "peak buffered MiB",
        "stalled closed",
        "missing / out of order",
    ):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for r in result["phases"]:
        table.add_row(
            r["phase"],
            f"{r['stalled']:g}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['offered_per_s']:,.0f}",
            f"{r['deliveries_per_s']:,.0f}",
            f"{r['cpu_us_per_delivery']:.2f}",
            f"{r['capacity_per_s']:,.0f}",
            f"{r['client_cpu_pct']:.0f}",
            f"{r['rss_delta_mib']:.1f}"
            + (f" (tm {r['tracemalloc_peak_mib']:.1f})" if r["tracemalloc_peak_mib"] else ""),
            f"{r['peak_buffered_mib']:.2f}",
            f"{r['slow_clients_closed']:g}",
            f"{r['missing']:g} / {r['out_of_order']:g}",
        )
    ratio_table = Table(title=f"ratios at {cfg['clients']:,} clients (lower is better, except capacity)")
    ratio_table.add_column("")
    for key in RATIO_KEYS:
        ratio_table.add_column(key, justify="right")
    for label, values in result["ratios"].items():
        ratio_table.add_row(label, *("-" if v is None else f"{v:.2f}x" for v in values.values()))
    console.print(table)
    console.print(ratio_table)


def print_storms(storms: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    if not storms:
        return
    first = storms[0]["config"]

    def seconds(v: float) -> str:
        return f"{v:.3f}" if v < 1 else f"{v:.2f}"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b > 0 else "-"

    clients_view = [
        ("broker", lambda s: s["config"]["broker"]),
        ("clients", lambda s: f"{s['clients']:,}"),
        ("live rate/s", lambda s: f"{s['config']['rate']:g}"),
        ("all subscribed s", lambda s: seconds(s["subscribed_all_s"])),
        ("caught up p50 s", lambda s: seconds(s["caught_up_p50_s"])),
        ("p99 s", lambda s: seconds(s["caught_up_p99_s"])),
        ("all s", lambda s: seconds(s["caught_up_all_s"])),
        ("missed / dup per client", lambda s: f"{s['missed_per_client']:g} / {s['duplicates_per_client']:g}"),
        ("recovery failed", lambda s: f"{s['recovery_failed']:g}"),
        ("load-gen CPU %", lambda s: f"{s['client_cpu_pct']:.0f}"),
        ("baseline: live burst, all s", lambda s: seconds(s["live_all_s"])),
        ("load-gen CPU %", lambda s: f"{s['live_client_cpu_pct']:.0f}"),
        ("storm / live", lambda s: ratio(s["caught_up_all_s"], s["live_all_s"])),
    ]
    costs = [
        ("broker", lambda s: s["config"]["broker"]),
        ("clients", lambda s: f"{s['clients']:,}"),
        ("server CPU s", lambda s: f"{s['server_cpu_s']:.2f}"),
        ("CPU us/delivery", lambda s: f"{s['cpu_us_per_caught_up_delivery']:.1f}"),
        ("baseline: live burst CPU s", lambda s: f"{s['live_cpu_s']:.2f}"),
        ("storm / live", lambda s: ratio(s["server_cpu_s"], s["live_cpu_s"])),
        ("RSS peak MiB", lambda s: f"{s['rss_peak_delta_mib']:.1f}"),
        ("from memory", lambda s: f"{s['resumed_from_history']:,.0f}"),
        ("readers (peak open)", lambda s: f"{s['readers_opened']:,.0f} ({s['peak_readers']:g})"),
        ("reads", lambda s: f"{s['reads']:,.0f}"),
        ("records read", lambda s: f"{s['records']:,.0f}"),
        ("offset requests", lambda s: f"{s['offset_requests']:,.0f}"),
        ("reader start s (sum)", lambda s: f"{s['reader_start_s']:.1f}"),
        ("broker CPU s", lambda s: "-" if s["kafka_cpu_s"] != s["kafka_cpu_s"] else f"{s['kafka_cpu_s']:.2f}"),
        ("broker fds peak", lambda s: "-" if s["kafka_fds_peak"] is None else f"{s['kafka_fds_peak']:,.0f}"),
    ]
    titles = [
        f"reconnect storm: every client drops, {first['missed']} events of {first['payload']} B are published,"
        f" every client resumes at once from its cursor; medians of {first['rounds']} rounds"
        " (missed / duplicates, recovery failed: the worst round)",
        f"reconnect storm: what it costs (server: this process; max_readers {first['max_readers']},"
        f" history {first['history']:,})",
    ]
    for title, cols in zip(titles, (clients_view, costs), strict=True):
        table = Table(title=title)
        for name, _ in cols:
            table.add_column(name, justify="left" if name == "broker" else "right")
        for s in storms:
            table.add_row(*(fmt(s) for _, fmt in cols))
        console.print(table)


async def with_broker(args: argparse.Namespace, sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The storm at each size, on the chosen broker."""
    out = []
    if args.broker == "memory":
        from reactive_services.adapters.memory import InMemoryBroker

        for size in sizes:
            print(f"storm on memory, {size['clients']:,} clients", file=sys.stderr)
            async with InMemoryBroker(partitions=1) as broker:
                rounds = await storm_rounds(args, size, broker, None)
            out.append(storm_result(args, size, rounds))
        return out
    from reactive_services.adapters.kafka import KafkaBroker
    from reactive_services.testing import local_kafka

    bootstrap = args.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    state_dir = args.kafka_state_dir
    started = False
    if not bootstrap:
        state_dir = state_dir or tempfile.mkdtemp(prefix="hub-fanout-kafka-")
        print(f"starting a local Kafka in {state_dir} ...", file=sys.stderr)
        bootstrap = local_kafka.start(state_dir)
        started = True
    pid = args.kafka_pid
    if pid is None and state_dir:
        pid = local_kafka.status(state_dir).get("pid")
    if pid is None:
        print("the Kafka broker's pid is unknown (--kafka-pid, --kafka-state-dir): no broker CPU", file=sys.stderr)
    try:
        for size in sizes:
            print(f"storm on kafka ({bootstrap}), {size['clients']:,} clients", file=sys.stderr)
            async with KafkaBroker(bootstrap) as broker:
                rounds = await storm_rounds(args, size, broker, pid)
            out.append(storm_result(args, size, rounds))
    finally:
        if started:
            local_kafka.stop(state_dir)
    return out


def storm_result(args: argparse.Namespace, size: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **median_rows(rounds),
        "config": {
            "broker": args.broker,
            **size,
            **{k: getattr(args, k) for k in ("missed", "payload", "max_readers", "history", "queue_size", "rounds")},
        },
        "rounds": rounds,
    }


def per_size(text: str, n: int, kind: type, name: str) -> list[Any]:
    values = [kind(v) for v in text.split(",")]
    if len(values) == 1:
        values *= n
    if len(values) != n:
        raise SystemExit(f"--{name}: one value, or one per --clients size ({n})")
    return values


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(v) for v in args.clients.split(",")]
    rates = per_size(args.rate, len(counts), float, "rate")
    events = per_size(args.events, len(counts), int, "events")
    sizes = [{"clients": c, "rate": r, "events": e} for c, r, e in zip(counts, rates, events, strict=True)]
    result: dict[str, Any] = {"fanout": [], "storm": []}
    if args.only in (None, "fanout"):
        for size in sizes:
            rounds = []
            for r in range(args.rounds):
                print(f"fan-out, {size['clients']:,} clients, round {r + 1}/{args.rounds}", file=sys.stderr)
                rounds.append(await fanout_round(args, size))
            phases = [median_rows([rnd[k] for rnd in rounds]) for k in range(len(rounds[0]))]
            result["fanout"].append(
                {
                    "config": {
                        **size,
                        **{k: getattr(args, k) for k in ("stalled_fraction", "payload", "queue_size", "sndbuf")},
                        "rounds": args.rounds,
                    },
                    "phases": phases,
                    "rounds": rounds,
                    "ratios": {
                        "hub / broadcast, no stall": ratios(phases[0], phases[1]),
                        "hub / broadcast, stalled": ratios(phases[3], phases[2]),
                        "hub stalled / hub no stall": ratios(phases[3], phases[0]),
                    },
                }
            )
    if args.only in (None, "storm"):
        result["storm"] = await with_broker(args, sizes)
    return result


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(width=240)
    for fanout in result["fanout"]:
        print_fanout(fanout, console)
    print_storms(result["storm"], console)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="1000", help="websocket clients; a list runs each size (e.g. 1000,10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; medians are printed (default 3)")
    parser.add_argument("--events", default="300", help="events per fan-out phase, or one per size (default 300)")
    parser.add_argument(
        "--rate", default="50", help="events per second, or one per size, e.g. 50,5 (default 50); the storm's live rate"
    )
    parser.add_argument(
        "--stalled-fraction", type=float, default=0.1, help="fraction of clients that stop reading (default 0.1)"
    )
    parser.add_argument("--payload", type=int, default=1024, help="event padding, bytes (default 1024)")
    parser.add_argument("--queue-size", type=int, default=64, help="the server's queue_size (default 64)")
    parser.add_argument(
        "--sndbuf", type=int, default=16384, help="SO_SNDBUF of the server's sockets, bytes (0: OS default)"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="connections the child opens at once (default 100)"
    )
    parser.add_argument("--only", choices=("fanout", "storm"), help="only the fan-out phases, or only the storm")
    parser.add_argument("--broker", choices=("memory", "kafka"), default="memory", help="the storm's log (memory)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka for --broker kafka (else $KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--kafka-state-dir", help="a local_kafka state dir (the broker's pid, for its CPU)")
    parser.add_argument("--kafka-pid", type=int, help="the Kafka broker's pid (for its CPU and fds)")
    parser.add_argument("--missed", type=int, default=100, help="events published while the clients are away (100)")
    parser.add_argument("--max-readers", type=int, default=64, help="NotificationLog max_readers (default 64)")
    parser.add_argument(
        "--history",
        type=int,
        default=10_000,
        help="NotificationLog history: frames kept in memory for resuming clients (default 10000; 0: every"
        " resume reads the log)",
    )
    parser.add_argument("--storm-timeout", type=float, default=600, help="seconds to wait for catch-up (600)")
    parser.add_argument("--tracemalloc", action="store_true", help="also report the tracemalloc peak (slower)")
    parser.add_argument("--json", metavar="OUT", help="write the results (every round) as JSON to OUT")
    args = parser.parse_args(argv)
    if not 0 <= args.stalled_fraction < 1:
        parser.error("--stalled-fraction must be in [0, 1)")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.kafka:
        args.broker = "kafka"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        url, clients, stall_every, concurrency = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        asyncio.run(child_main(url, clients, stall_every, concurrency))
        return {}
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    print_tables(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
