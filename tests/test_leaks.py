"""Leak checks: Python objects, RSS, threads and file descriptors stay flat across repeated
start/publish/stop cycles and across one million delivered messages."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest

from support import FakeWebSocket, connect_user, unique, wait_for
from vuemantics_pubsub import ConnectionManager, UploadProgressPublisher


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class CountingWebSocket:
    """Counts what it receives without keeping it (a list of a million strings would be the leak)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    async def send_text(self, data: str) -> None:
        self.count += 1
        self.last = data


async def one_cycle(url: str, manager: ConnectionManager, upload: str, ws: FakeWebSocket) -> None:
    publisher = UploadProgressPublisher(url, manager=manager)
    await publisher.start()
    before = len(ws.sent)
    await publisher.publish_progress(upload, "cycle")
    await publisher.publish_to_user("nobody", "cycle")
    await wait_for(lambda: len(ws.sent) > before, timeout=5, what="the cycle's message")
    await publisher.stop()


async def cycles(url: str, count: int) -> dict[str, int]:
    """Run `count` life cycles after a warm-up; return how much each resource grew."""
    manager = ConnectionManager()
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    for _ in range(30):  # warm-up: caches, arenas, imports
        await one_cycle(url, manager, upload, ws)
    ws.sent.clear()
    gc.collect()
    objects, rss, nthreads, nfds = len(gc.get_objects()), rss_kib(), threads(), fds()
    for _ in range(count):
        await one_cycle(url, manager, upload, ws)
    ws.sent.clear()
    gc.collect()
    await asyncio.sleep(0.05)
    grown = {"objects": len(gc.get_objects()) - objects, "rss_kib": rss_kib() - rss,
             "threads": threads() - nthreads, "fds": fds() - nfds}
    print(f"\n{count} cycles: {grown}")
    return grown


@pytest.mark.timeout(120)
async def test_start_publish_stop_cycles_leave_no_objects_threads_or_fds(redis_server) -> None:
    """200 full life cycles: no growth in Python objects, threads or descriptors."""
    grown = await cycles(redis_server.url, 200)
    assert grown["threads"] == 0, "a listener or connector thread outlived stop()"
    assert grown["fds"] == 0, "a socket, eventfd or pipe outlived stop()"
    assert grown["objects"] < 100, f"{grown['objects']} more Python objects after 200 cycles"


@pytest.mark.rss
@pytest.mark.timeout(120)
async def test_start_publish_stop_cycles_keep_rss_flat(redis_server) -> None:
    """200 full life cycles: RSS grows by less than 2 MiB."""
    grown = await cycles(redis_server.url, 200)
    assert grown["rss_kib"] < 2048, f"RSS grew by {grown['rss_kib']} KiB over 200 cycles"


@pytest.mark.rss
@pytest.mark.timeout(180)
async def test_a_million_delivered_messages_keep_rss_flat(redis_server) -> None:
    """1,000,000 messages published by 500 concurrent tasks and delivered: RSS grows < 5 MB."""
    manager = ConnectionManager()
    upload = unique("upload")
    ws = CountingWebSocket()
    await manager.connect("watcher", ws)
    await manager.subscribe_upload("watcher", upload)
    publisher = UploadProgressPublisher(redis_server.url, manager=manager)
    await publisher.start()
    payload = '{"action":"upload_progress","payload":{"progress_percent":42,"message":"%s"}}'

    async def produce(total: int, tasks: int = 500) -> None:
        async def worker(n: int) -> None:
            for i in range(n):
                await publisher.publish_progress(upload, payload % i)

        target = ws.count + total
        await asyncio.gather(*(worker(total // tasks) for _ in range(tasks)))
        await wait_for(lambda: ws.count >= target, timeout=60, what=f"{total} deliveries")

    try:
        await produce(100_000)  # warm-up to the steady state
        gc.collect()
        rss = rss_kib()
        objects = len(gc.get_objects())
        await produce(1_000_000)
        gc.collect()
        grown_kib = rss_kib() - rss
        stats = publisher.stats()
    finally:
        await publisher.stop()
    print(f"\n1,000,000 messages: RSS {grown_kib:+d} KiB, objects {len(gc.get_objects()) - objects:+d}")
    assert stats["delivered"] == 1_100_000 and stats["received"] == 1_100_000
    assert stats["published"] == 1_100_000
    assert len(gc.get_objects()) - objects < 100
    assert grown_kib < 5 * 1024, f"RSS grew by {grown_kib} KiB over one million messages"
