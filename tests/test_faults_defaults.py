"""With the default knobs (no test tuning): Redis killed for two seconds, long enough for the
reconnect delays to reach their cap, then restarted on the same port: delivery resumes within
one second of Redis accepting connections, and every message published during the outage
arrives after it, in order, exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest

from support import connect_user, unique, wait_for

pytestmark = pytest.mark.timeout(30)


class StampedWebSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.times: list[float] = []

    async def send_text(self, data: str) -> None:
        self.sent.append(data)
        self.times.append(time.monotonic())


async def test_recovery_with_default_settings(private_redis, make_publisher, manager) -> None:
    upload, user = unique("upload"), unique("alice")
    ws = StampedWebSocket()
    await manager.connect(user, ws)
    await manager.subscribe_upload(user, upload)
    publisher = make_publisher(redis_url=private_redis.url, manager=manager)
    await publisher.start()
    await publisher.publish_progress(upload, "before")
    await wait_for(lambda: ws.sent == ["before"], timeout=3, what="the first message")

    private_redis.kill()
    await wait_for(lambda: not publisher.stats()["publisher_connected"], timeout=3,
                   what="the publisher to notice the outage")
    outage = [f"o{i}" for i in range(100)]
    for payload in outage:  # returns at once: queued in the outbox
        await asyncio.wait_for(publisher.publish_progress(upload, payload), timeout=0.25)
        await asyncio.sleep(0.02)
    ready = await asyncio.to_thread(private_redis.start)

    await wait_for(lambda: len(ws.sent) == 1 + len(outage), timeout=5,
                   what=lambda: f"the outage's messages; got {len(ws.sent) - 1}")
    resumed = ws.times[1] - ready
    print(f"\nmeasured (default knobs): delivery resumed {resumed:.3f} s after Redis was back")
    assert resumed < 1.0, f"delivery resumed {resumed:.3f} s after Redis accepted connections"
    await asyncio.sleep(0.3)
    assert ws.sent == ["before"] + outage
