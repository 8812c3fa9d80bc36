"""Hub fan-out at 1,000 clients: ``NotificationHub`` vs a bare ``websockets.broadcast`` loop.

One ``WebSocketServer`` (this process) accepts ``--clients`` websocket clients run by a child
process (a minimal asyncio client: hand-written handshake and frame parser, so that the
client side costs little). Every client subscribes to the channel ``fanout``. Then, on the
**same connections**, four measured phases publish ``--events`` events at ``--rate`` events/s:

  1. hub, every client reading           ``server.hub.on_next(("fanout", event))``
  2. broadcast, every client reading     ``websockets.broadcast(conns, encode_event(...), text=True)``
  3. broadcast, ``--stalled-fraction`` of the clients not reading (``pause_reading()``)
  4. hub, the same clients still not reading (``overflow="close"``: they get closed)

Each event carries its send time (``time.monotonic()``, i.e. CLOCK_MONOTONIC, shared by the
two processes on Linux); the child records ``receive time - send time`` for every delivery.

Printed per phase: p50 / p99 delivery latency (ms), deliveries/s (received by the reading
clients, first send to last receive: the offered rate when the server keeps up), server CPU per
delivery (us, ``time.process_time`` of this process over the phase, so system time of the socket
writes included) and the capacity it implies (deliveries/s for one core), RSS growth of this
process over the phase (MiB, peak sampled every 10 ms minus the start; optionally the
``tracemalloc`` peak), and the peak of what the server held for the clients (MiB: queued frames
+ transport write buffers, sampled); then hub / broadcast ratios. Nothing is asserted. Between
phases 3 and 4 the stalled clients read their backlog and the server's buffers empty, so both
start alike; the RSS of phase 4 may still reuse memory freed after phase 3 (the peak-buffered
column does not depend on that).

Kernel socket buffers: Linux autotunes a loopback socket's send buffer up to ~4 MB, so a
client that stops reading would absorb ~4 MB before the server sees it; ``--sndbuf`` (default
16 KiB, 0 = OS default) pins the server sockets' ``SO_SNDBUF`` and the stalled clients use a
4 KiB ``SO_RCVBUF``, so that stalled clients show within a few hundred events.

On 2 shared cores the numbers are noisy; compare ratios, and rerun::

    python bench/hub_fanout.py [--clients 1000] [--events 300] [--rate 50]
                               [--stalled-fraction 0.1] [--payload 1024] [--json OUT]
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
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactive_services.adapters.websocket import Connection, WebSocketServer, WebSocketsTransport, encode_event  # noqa: E402

CHANNEL = "fanout"
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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
    assert n < 126
    return bytes([0x81, 0x80 | n]) + key + masked


class Stats:
    def __init__(self) -> None:
        self.phase = -1
        self.latencies: list[float] = []
        self.first_recv = self.last_recv = 0.0


class BenchClient(asyncio.Protocol):
    """Handshake, subscribe to ``fanout``, then parse server frames (unmasked) and record the
    latency of each event of the current phase."""

    def __init__(self, host: str, port: int, stats: Stats, subscribed: asyncio.Future[None]) -> None:
        self.host, self.port, self.stats, self.subscribed = host, port, stats, subscribed
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
            self.transport.write(masked_text_frame(b'{"op":"subscribe","channels":["fanout"]}'))
        pos, end = 0, len(buf)
        stats = self.stats
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
            if opcode == 1:
                frame = orjson.loads(payload)
                if frame["type"] == "event":
                    event = frame["event"]
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
                elif frame["type"] == "subscribed" and not self.subscribed.done():
                    self.subscribed.set_result(None)
        del buf[:pos]


async def child_main(url: str, clients: int, stall_every: int) -> None:
    loop = asyncio.get_running_loop()
    raise_fd_limit(clients + 256)
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stats = Stats()
    conns: list[BenchClient] = []
    gate = asyncio.Semaphore(64)

    async def open_client(i: int) -> None:
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if stall_every and i % stall_every == 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, int(port)))
            subscribed = loop.create_future()
            _, client = await loop.create_connection(lambda: BenchClient(host, int(port), stats, subscribed), sock=sock)
            await asyncio.wait_for(subscribed, 30)
            conns.append(client)

    await asyncio.gather(*(open_client(i) for i in range(clients)))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: Any) -> None:
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
        elif cmd["cmd"] == "quit":
            break
    for c in conns:
        if c.transport is not None:
            c.transport.abort()


# -- the parent: server, publisher, measurements ------------------------------------------------


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

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


async def run_phase(
    args: argparse.Namespace,
    server: WebSocketServer,
    child: Child,
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

    start_rss = rss()
    peak = {"rss": start_rss, "buffered": 0}
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            peak["rss"] = max(peak["rss"], rss())
            buffered = 0
            for conn in server.clients:
                buffered += conn.queued * frame_len
                transport = conn.transport
                if isinstance(transport, WebSocketsTransport):
                    buffered += transport.write_buffer_size
            peak["buffered"] = max(peak["buffered"], buffered)
            try:
                await asyncio.wait_for(stop_sampling.wait(), 0.01)
            except TimeoutError:
                pass

    if args.tracemalloc:
        tracemalloc.start()
        tracemalloc.reset_peak()
    sampler = asyncio.create_task(sample())
    cpu0 = time.process_time()
    t0 = time.monotonic()
    interval = 1.0 / args.rate
    # The baseline writes to the same connections, listed once per phase (the hub iterates
    # its channel index the same way).
    conns = [c.transport.connection for c in server.clients if isinstance(c.transport, WebSocketsTransport)]
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
    stop_sampling.set()
    await sampler
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
        "deliveries_per_s": received / span if span else float("nan"),
        "cpu_us_per_delivery": cpu / max(1, received) * 1e6,
        "capacity_per_s": max(1, received) / cpu if cpu else float("nan"),
        "rss_delta_mib": (peak["rss"] - start_rss) / MiB,
        "tracemalloc_peak_mib": traced_peak,
        "peak_buffered_mib": peak["buffered"] / MiB,
        "slow_clients_closed": hub.slow_clients_closed - closed_before if mode == "hub" else 0,
        "hub_delivered": hub.delivered - delivered_before if mode == "hub" else None,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(args.clients + 256)
    logging.getLogger("reactive_services.adapters.websocket").setLevel(logging.ERROR)  # one warning per closed client
    stall_every = round(1 / args.stalled_fraction) if args.stalled_fraction > 0 else 0
    server = WebSocketServer(
        queue_size=args.queue_size, overflow="close", close_timeout=1.0, ping_interval=None, max_message_size=4096
    )

    def pin_sndbuf(conn: Connection) -> None:
        if args.sndbuf and isinstance(conn.transport, WebSocketsTransport):
            sock = conn.transport.connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)

    server.connections.subscribe(pin_sndbuf)
    await server.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        server.url,
        str(args.clients),
        str(stall_every),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    child = Child(proc)
    try:
        t = time.monotonic()
        ready = await child.read(timeout=120)
        while server.subscribers(CHANNEL) < args.clients:
            await asyncio.sleep(0.01)
        print(f"{ready['ready']} clients connected and subscribed in {time.monotonic() - t:.1f}s", file=sys.stderr)
        # Warm-up (not reported): both paths, a few events.
        await run_phase(args, server, child, 0, "warm-up", "hub", False, 20)
        await run_phase(args, server, child, 1, "warm-up", "broadcast", False, 20)
        stalled_label = f"{args.stalled_fraction:.0%} stalled"
        plan = [
            ("hub", "hub", False),
            ("broadcast", "broadcast", False),
            (f"broadcast, {stalled_label}", "broadcast", True),
            (f"hub, {stalled_label}", "hub", True),
        ]
        results = []
        for k, (name, mode, stall) in enumerate(plan, start=2):
            print(f"phase: {name} ...", file=sys.stderr)
            results.append(await run_phase(args, server, child, k, name, mode, stall, args.events))
            if stall and mode == "broadcast":
                # Same starting point for the hub: the stalled clients read their backlog,
                # the server's buffers empty, then the same clients stall again.
                await child.ask({"cmd": "resume"})
                await drained(server)
        assert proc.stdin is not None
        proc.stdin.write(b'{"cmd": "quit"}\n')
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
        await server.stop()
    return {
        "config": {
            k: getattr(args, k)
            for k in ("clients", "events", "rate", "stalled_fraction", "payload", "queue_size", "sndbuf")
        },
        "phases": results,
        "ratios": {
            "hub / broadcast, no stall": ratios(results[0], results[1]),
            "hub / broadcast, stalled": ratios(results[3], results[2]),
            "hub stalled / hub no stall": ratios(results[3], results[0]),
        },
    }


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


RATIO_KEYS = ("p50_ms", "p99_ms", "capacity_per_s", "cpu_us_per_delivery", "rss_delta_mib", "peak_buffered_mib")


def ratios(hub: dict[str, Any], bcast: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = hub[key], bcast[key]
        # Memory deltas below 0.1 MiB are noise (RSS moves by pages and arenas): no ratio.
        floor = 0.1 if key.endswith("_mib") else 0.0
        out[key] = a / b if b and b > floor and a == a and b == b else None
    return out


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg = result["config"]
    table = Table(
        title=(
            f"hub fan-out: {cfg['clients']} clients, {cfg['events']} events of {cfg['payload']} B at"
            f" {cfg['rate']}/s, queue_size {cfg['queue_size']}, SO_SNDBUF {cfg['sndbuf'] or 'OS'}"
        )
    )
    for col in (
        "phase",
        "stalled",
        "p50 ms",
        "p99 ms",
        "deliveries/s",
        "CPU us/delivery",
        "capacity/s",
        "RSS delta MiB",
        "peak buffered MiB",
        "stalled closed",
        "missing / out of order",
    ):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for r in result["phases"]:
        table.add_row(
            r["phase"],
            str(r["stalled"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['deliveries_per_s']:,.0f}",
            f"{r['cpu_us_per_delivery']:.2f}",
            f"{r['capacity_per_s']:,.0f}",
            f"{r['rss_delta_mib']:.1f}"
            + (f" (tm {r['tracemalloc_peak_mib']:.1f})" if r["tracemalloc_peak_mib"] else ""),
            f"{r['peak_buffered_mib']:.2f}",
            str(r["slow_clients_closed"]),
            f"{r['missing']} / {r['out_of_order']}",
        )
    ratio_table = Table(title="ratios (lower is better, except capacity)")
    ratio_table.add_column("")
    for key in RATIO_KEYS:
        ratio_table.add_column(key, justify="right")
    for label, values in result["ratios"].items():
        ratio_table.add_row(label, *("-" if v is None else f"{v:.2f}x" for v in values.values()))
    console = Console(width=200)
    console.print(table)
    console.print(ratio_table)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        url, clients, stall_every = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        asyncio.run(child_main(url, clients, stall_every))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="websocket clients (default 1000)")
    parser.add_argument("--events", type=int, default=300, help="events per measured phase (default 300)")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second (default 50)")
    parser.add_argument(
        "--stalled-fraction", type=float, default=0.1, help="fraction of clients that stop reading (default 0.1)"
    )
    parser.add_argument("--payload", type=int, default=1024, help="event padding, bytes (default 1024)")
    parser.add_argument("--queue-size", type=int, default=64, help="the server's queue_size (default 64)")
    parser.add_argument(
        "--sndbuf", type=int, default=16384, help="SO_SNDBUF of the server's sockets, bytes (0: OS default)"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="also report the tracemalloc peak (slower)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    args = parser.parse_args()
    if not 0 <= args.stalled_fraction < 1:
        parser.error("--stalled-fraction must be in [0, 1)")
    result = asyncio.run(main_async(args))
    print_tables(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
