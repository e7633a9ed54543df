"""The benchmark scenarios; one run of one scenario for one implementation per process.

    python bench/scenarios.py IMPL SCENARIO --url redis://127.0.0.1:PORT/0 [--params JSON]

IMPL is ``reference`` (bench/reference.py) or ``native`` (vuemantics_pubsub, imported only
then). The process prints one line ``RESULT {json}`` on stdout. Every run gets a fresh
interpreter and event loop, its own manager and fake WebSockets, and waits until the
publisher's subscription delivers before measuring (the reference's ``start()`` does not).

Scenarios (SPEC 5):
  sequential   one task awaiting publish_progress in a loop: publishes/s
  concurrent   N tasks each awaiting K publishes to its own upload, listener in the same
               process: end-to-end delivered msg/s, lost messages, loop CPU per message
  latency      open-loop publishes at a steady rate: publish->send_text percentiles,
               loop CPU per message (publish + deliver)
  idle         a started publisher with nothing to do: CPU and event-loop wake-ups
  memory       RSS after delivering M messages pumped into Redis by a raw pipelined
               connection; loop CPU per message of delivery alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import time
from typing import Any, Awaitable, Callable

perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns

# A progress update as the backend's UploadProgressUpdate would serialise it (~170 bytes);
# the latency scenario puts the publish time first: {"t":<perf_counter_ns>,...
BODY = (
    '"type":"upload_progress","upload_id":"8d5c1f1e-7d1b-4c57-9a53-2f0f7c3e9b1a",'
    '"status":"processing","stage":"embedding","progress":42,'
    '"message":"Generating embeddings for frame 120 of 300"}'
)
PAYLOAD = '{"t":0,' + BODY


# -- the manager and the WebSockets ----------------------------------------------------


class BenchManager:
    """The backend manager's interface, kept minimal; the same for both implementations."""

    def __init__(self) -> None:
        self.user_connections: dict[str, set[Any]] = {}
        self.upload_subscribers: dict[str, set[str]] = {}

    async def connect(self, user_id: str, websocket: Any) -> None:
        self.user_connections.setdefault(user_id, set()).add(websocket)

    async def disconnect(self, user_id: str, websocket: Any) -> None:
        sockets = self.user_connections.get(user_id)
        if sockets is not None:
            sockets.discard(websocket)
            if not sockets:
                del self.user_connections[user_id]

    async def subscribe_upload(self, user_id: str, upload_id: str) -> None:
        self.upload_subscribers.setdefault(upload_id, set()).add(user_id)

    async def unsubscribe_upload(self, user_id: str, upload_id: str) -> None:
        self.upload_subscribers.get(upload_id, set()).discard(user_id)

    def get_upload_subscriber_ids(self, upload_id: str) -> set[str]:
        return set(self.upload_subscribers.get(upload_id, ()))


class Sink:
    """What every fake WebSocket of a run reports to."""

    def __init__(self, record_latency: bool = False) -> None:
        self.delivered = 0
        self.last_ns = 0
        self.latencies: list[tuple[int, int]] | None = [] if record_latency else None


class FakeWebSocket:
    """``send_text`` counts; with latency recording it parses the publish stamp."""

    __slots__ = ("sink",)

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def send_text(self, data: str) -> None:
        sink = self.sink
        now = perf_counter_ns()
        sink.delivered += 1
        sink.last_ns = now
        if sink.latencies is not None:
            sent = int(data[5:data.index(",", 5)])
            sink.latencies.append((sent, now - sent))


class ProbeWebSocket:
    """Sets an event when anything arrives: proves the subscription is live."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def send_text(self, data: str) -> None:
        self.event.set()


async def add_user(manager: BenchManager, user_id: str, upload_id: str | None, ws: Any) -> None:
    await manager.connect(user_id, ws)
    if upload_id is not None:
        await manager.subscribe_upload(user_id, upload_id)


async def wait_subscribed(pub: Any, manager: BenchManager, limit: float = 10.0) -> float:
    """Publish probes to ``user:__probe__`` until one is delivered; seconds it took."""
    probe = ProbeWebSocket()
    await add_user(manager, "__probe__", None, probe)
    t0 = perf_counter()
    while not probe.event.is_set():
        if perf_counter() - t0 > limit:
            raise RuntimeError(f"subscription not live after {limit} s")
        await pub.publish_to_user("__probe__", "probe")
        try:
            await asyncio.wait_for(probe.event.wait(), 0.05)
        except TimeoutError:
            pass
    await manager.disconnect("__probe__", probe)
    await asyncio.sleep(0.05)  # let late probes drain before anything is measured
    return perf_counter() - t0


async def settle(sink: Sink, expected: int, stall: float, cap: float) -> None:
    """Wait until ``expected`` messages were delivered, or nothing arrived for ``stall`` s."""
    start = last_change = perf_counter()
    last = sink.delivered
    while sink.delivered < expected:
        await asyncio.sleep(0.005)
        now = perf_counter()
        if sink.delivered != last:
            last, last_change = sink.delivered, now
        elif now - last_change > stall or now - start > cap:
            break


# -- measuring ---------------------------------------------------------------------------


class WakeCounter:
    """Counts event-loop iterations by wrapping the selector's ``select``.

    A *wake-up* is a ``select`` that was allowed to block (timeout None or > 0) and
    returned: the loop slept and something woke it. The iterations that follow at once
    (timeout 0, callbacks still ready) belong to the same wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        self.wakes: list[float] | None = None  # instants of wake-ups, while recording
        selector = getattr(loop, "_selector", None)
        self.available = selector is not None
        if selector is not None:
            select = selector.select

            def counting_select(timeout: float | None = None) -> Any:
                self.count += 1
                events = select(timeout)
                if self.wakes is not None and (timeout is None or timeout > 0):
                    self.wakes.append(perf_counter())
                return events

            selector.select = counting_select


class Meter:
    """Wall, loop-thread CPU, process CPU and loop wake-ups between start() and stop()."""

    def __init__(self, wakes: WakeCounter) -> None:
        self.wakes = wakes

    def start(self) -> None:
        self.t0 = perf_counter()
        self.thread0 = time.thread_time()
        self.proc0 = time.process_time()
        self.wake0 = self.wakes.count

    def stop(self) -> None:
        self.wall = perf_counter() - self.t0
        self.thread_cpu = time.thread_time() - self.thread0
        self.proc_cpu = time.process_time() - self.proc0
        self.wakeups = self.wakes.count - self.wake0


def rss_kb() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def percentiles(values: list[float], points: list[float]) -> list[float]:
    """Nearest-rank percentiles of ``values`` (sorted here) at ``points`` (0..100)."""
    if not values:
        return [float("nan")] * len(points)
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, max(0, round(p / 100 * last)))] for p in points]


def native_stats(pub: Any) -> dict[str, Any] | None:
    stats = getattr(pub, "stats", None)
    if stats is None:
        return None
    try:
        return {k: v for k, v in stats().items() if isinstance(v, (int, float, str, bool))}
    except Exception as exc:  # the stats are informative only
        return {"error": repr(exc)}


# -- scenarios -------------------------------------------------------------------------


async def sequential(pub: Any, manager: BenchManager, wakes: WakeCounter, p: dict) -> dict:
    """One task: ``await publish_progress`` in a loop for ``seconds``."""
    sink = Sink()
    await add_user(manager, "seq-user", "seq", FakeWebSocket(sink))
    seconds = p["seconds"]
    meter = Meter(wakes)
    n = 0
    meter.start()
    deadline = meter.t0 + seconds
    while perf_counter() < deadline:
        await pub.publish_progress("seq", PAYLOAD)
        n += 1
    meter.stop()
    await settle(sink, n, stall=1.0, cap=10.0)
    return {
        "publishes_per_s": n / meter.wall,
        "published": n,
        "delivered": sink.delivered,
        "loop_cpu_us_per_publish": meter.thread_cpu / n * 1e6,
    }


async def concurrent(pub: Any, manager: BenchManager, wakes: WakeCounter, p: dict) -> dict:
    """``publishers`` tasks each awaiting ``per_publisher`` publishes to its own upload."""
    publishers, per = p["publishers"], p["per_publisher"]
    sink = Sink()
    for i in range(publishers):
        await add_user(manager, f"user{i}", f"up{i}", FakeWebSocket(sink))
    total = publishers * per
    raised = 0

    async def worker(upload_id: str) -> None:
        nonlocal raised
        for _ in range(per):
            try:
                await pub.publish_progress(upload_id, PAYLOAD)
            except Exception:
                raised += 1

    meter = Meter(wakes)
    meter.start()
    t0_ns = perf_counter_ns()
    await asyncio.gather(*(worker(f"up{i}") for i in range(publishers)))
    published_s = (perf_counter_ns() - t0_ns) / 1e9
    await settle(sink, total, stall=p.get("stall", 1.0), cap=60.0)
    meter.stop()
    delivered = sink.delivered
    end_ns = sink.last_ns if delivered else perf_counter_ns()
    elapsed = max(end_ns - t0_ns, 1) / 1e9
    return {
        "delivered_per_s": delivered / elapsed,
        "attempted": total,
        "delivered": delivered,
        "lost": total - delivered,
        "lost_pct": 100.0 * (total - delivered) / total,
        "publish_raised": raised,
        "publish_phase_s": published_s,
        "end_to_end_s": elapsed,
        "loop_cpu_us_per_delivered": meter.thread_cpu / max(delivered, 1) * 1e6,
        "process_cpu_us_per_delivered": meter.proc_cpu / max(delivered, 1) * 1e6,
    }


LATENCY_POINTS = (
    [float(x) for x in range(0, 99)]
    + [round(99.0 + x / 10, 1) for x in range(10)]
    + [99.95, 99.99, 100.0]
)


async def latency(pub: Any, manager: BenchManager, wakes: WakeCounter, p: dict) -> dict:
    """Open-loop publishes at ``rate``/s for ``seconds``; each payload carries its stamp."""
    rate, seconds, warmup = p["rate"], p["seconds"], p["warmup"]
    uploads = [f"lat{i}" for i in range(p["uploads"])]
    sink = Sink(record_latency=True)
    for i, upload_id in enumerate(uploads):
        await add_user(manager, f"lat-user{i}", upload_id, FakeWebSocket(sink))
    total = int(rate * seconds)
    pending: set[asyncio.Future[Any]] = set()
    raised = 0

    def done(fut: asyncio.Future[Any]) -> None:
        nonlocal raised
        pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            raised += 1

    meter = Meter(wakes)
    meter.start()
    t0 = perf_counter_ns()
    sent = 0
    n_uploads = len(uploads)
    while sent < total:
        due = min(total, (perf_counter_ns() - t0) * rate // 1_000_000_000 + 1)
        while sent < due:
            payload = f'{{"t":{perf_counter_ns()},{BODY}'
            fut = asyncio.ensure_future(pub.publish_progress(uploads[sent % n_uploads], payload))
            pending.add(fut)
            fut.add_done_callback(done)
            sent += 1
        await asyncio.sleep(0.001)
    send_s = (perf_counter_ns() - t0) / 1e9
    if pending:
        await asyncio.wait(list(pending), timeout=30)
    await settle(sink, total, stall=1.0, cap=30.0)
    meter.stop()
    assert sink.latencies is not None
    cutoff = t0 + int(warmup * 1e9)
    lat_ms = [lat / 1e6 for stamp, lat in sink.latencies if stamp >= cutoff]
    dist = percentiles(lat_ms, LATENCY_POINTS)
    at = dict(zip(LATENCY_POINTS, dist))
    return {
        "p50_ms": at[50.0],
        "p90_ms": at[90.0],
        "p99_ms": at[99.0],
        "p999_ms": at[99.9],
        "max_ms": at[100.0],
        "mean_ms": sum(lat_ms) / len(lat_ms) if lat_ms else float("nan"),
        "samples": len(lat_ms),
        "offered_per_s": total / send_s,
        "published": total,
        "delivered": sink.delivered,
        "lost": total - sink.delivered,
        "publish_raised": raised,
        "loop_cpu_us_per_msg": meter.thread_cpu / max(sink.delivered, 1) * 1e6,
        "wakeups_per_msg": meter.wakeups / max(sink.delivered, 1),
        "process_cpu_us_per_msg": meter.proc_cpu / max(sink.delivered, 1) * 1e6,
        "loop_cpu_pct": 100.0 * meter.thread_cpu / meter.wall,
        "latency_points": LATENCY_POINTS,
        "latency_ms": dist,
    }


async def idle(pub: Any, manager: BenchManager, wakes: WakeCounter, p: dict) -> dict:
    """A started, subscribed publisher with nothing to do for ``seconds``.

    Measuring begins ``settle`` s after the subscription probe, so timers armed by the
    probe's delivery have fired; what remains is what an idle publisher costs.
    """
    await asyncio.sleep(p.get("settle", 1.5))
    meter = Meter(wakes)
    wakes.wakes = []
    meter.start()
    deadline = meter.t0 + p["seconds"]
    await asyncio.sleep(p["seconds"])
    meter.stop()
    # the wake-up of the measuring sleep's own timer is not the publisher's
    wakeups = [round(t - meter.t0, 4) for t in wakes.wakes if t < deadline - 0.0005]
    wakes.wakes = None
    return {
        "wakeups_per_s": len(wakeups) / meter.wall,
        "wakeups": len(wakeups),
        "wakeup_at_s": wakeups[:100],
        "wakeups_counted": wakes.available,
        "process_cpu_ms_per_s": meter.proc_cpu / meter.wall * 1e3,
        "loop_cpu_ms_per_s": meter.thread_cpu / meter.wall * 1e3,
        "seconds": meter.wall,
    }


def _publish_command(channel: str, payload: str) -> bytes:
    parts = [b"PUBLISH", channel.encode(), payload.encode()]
    return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in parts)


async def _pump(host: str, port: int, block: bytes, per_block: int, blocks: int) -> None:
    """Write ``blocks`` copies of ``block`` on a raw connection and read every reply."""
    reader, writer = await asyncio.open_connection(host, port)
    want = per_block * blocks

    async def read_replies() -> None:
        seen = 0
        while seen < want:
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise RuntimeError("pump connection closed")
            seen += chunk.count(b"\n")

    replies = asyncio.ensure_future(read_replies())
    for _ in range(blocks):
        writer.write(block)
        await writer.drain()
    await replies
    writer.close()
    await writer.wait_closed()


async def memory(pub: Any, manager: BenchManager, wakes: WakeCounter, p: dict) -> dict:
    """Deliver ``messages`` pumped into Redis in chunks; RSS before, during and after."""
    sink = Sink()
    await add_user(manager, "mem-user", "mem", FakeWebSocket(sink))
    host, port = p["host"], p["port"]
    per_block = 500
    block = _publish_command("upload:mem", PAYLOAD) * per_block
    chunk_blocks = max(1, p["chunk"] // per_block)
    rss_start = rss_kb()["VmRSS"]

    async def deliver(blocks: int) -> None:
        target = sink.delivered + blocks * per_block
        await _pump(host, port, block, per_block, blocks)
        await settle(sink, target, stall=2.0, cap=120.0)

    await deliver(max(1, p["warmup"] // per_block))
    warm = sink.delivered
    rss_warm = rss_kb()["VmRSS"]
    checkpoints = [(warm, rss_warm)]
    total_blocks = p["messages"] // per_block
    meter = Meter(wakes)
    meter.start()
    done_blocks = 0
    while done_blocks < total_blocks:
        blocks = min(chunk_blocks, total_blocks - done_blocks)
        await deliver(blocks)
        done_blocks += blocks
        checkpoints.append((sink.delivered, rss_kb()["VmRSS"]))
    meter.stop()
    end = rss_kb()
    delivered = sink.delivered - warm
    expected = total_blocks * per_block
    return {
        "rss_mib": end["VmRSS"] / 1024,
        "rss_start_mib": rss_start / 1024,
        "rss_growth_mib": (end["VmRSS"] - rss_warm) / 1024,
        "peak_rss_mib": end["VmHWM"] / 1024,
        "messages": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "deliver_per_s": delivered / meter.wall,
        "loop_cpu_us_per_delivered": meter.thread_cpu / max(delivered, 1) * 1e6,
        "process_cpu_us_per_delivered": meter.proc_cpu / max(delivered, 1) * 1e6,
        "checkpoints": checkpoints,
    }


SCENARIOS: dict[str, Callable[..., Awaitable[dict]]] = {
    "sequential": sequential,
    "concurrent": concurrent,
    "latency": latency,
    "idle": idle,
    "memory": memory,
}


# -- one run -----------------------------------------------------------------------------


def make_publisher(impl: str, url: str, manager: BenchManager) -> Any:
    if impl == "reference":
        from reference import ReferencePublisher

        return ReferencePublisher(url, manager)
    if impl == "native":
        from vuemantics_pubsub import UploadProgressPublisher

        return UploadProgressPublisher(url, manager=manager)
    raise ValueError(f"unknown implementation {impl!r}")


async def run(impl: str, scenario: str, url: str, params: dict) -> dict:
    wakes = WakeCounter(asyncio.get_running_loop())
    manager = BenchManager()
    pub = make_publisher(impl, url, manager)
    await pub.start()
    subscribed_s = await wait_subscribed(pub, manager)
    try:
        result = await SCENARIOS[scenario](pub, manager, wakes, params)
        if impl != "reference":
            result["stats"] = native_stats(pub)
    finally:
        t0 = perf_counter()
        await pub.stop()
        stop_s = perf_counter() - t0
        close = getattr(pub, "close", None)
        if close is not None:
            await close()
    result["stop_s"] = stop_s
    result["subscribed_after_s"] = subscribed_s
    if impl == "reference":
        result["publish_errors"] = pub.publish_errors
        result["last_publish_error"] = pub.last_publish_error
        result["parser"] = pub.parser_name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("impl", choices=["reference", "native"])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--params", default="{}", help="JSON object of scenario parameters")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    # the reference logs every lost publish, as the original does; the records are made
    # (that cost is the original's) but not printed
    ref_logger = logging.getLogger("bench.reference")
    ref_logger.addHandler(logging.NullHandler())
    ref_logger.propagate = False
    result = asyncio.run(run(args.impl, args.scenario, args.url, json.loads(args.params)))
    result["python"] = sys.version.split()[0]
    result["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["pid"] = os.getpid()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
