"""A loop that cannot keep up loses nothing: the listener's queue fills to its bound, the
listener stops reading (Redis buffers for it), and everything arrives, in order, afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from support import assert_exactly_once_in_order, connect_user, unique, wait_for

pytestmark = pytest.mark.timeout(60)


async def test_full_queue_pauses_the_listener_and_loses_nothing(make_publisher, manager,
                                                                redis_server) -> None:
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    publisher = make_publisher(manager=manager, queue_max_messages=100)
    await publisher.start()
    total = 5_000
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        def flood() -> None:
            pipe = client.pipeline(transaction=False)
            for i in range(total):
                pipe.publish(f"upload:{upload}", f"m{i}")
            pipe.execute()

        flooding = asyncio.get_running_loop().run_in_executor(None, flood)
        time.sleep(0.5)  # the event loop is busy elsewhere: nothing is drained meanwhile
        assert publisher.stats()["queue_depth"] <= 100 + 1_000  # bounded (one read may overshoot)
        await flooding
    finally:
        client.close()
    await wait_for(lambda: len(ws.sent) == total, timeout=20,
                   what=lambda: f"{total} messages; got {len(ws.sent)}, {publisher.stats()!r}")
    assert_exactly_once_in_order(ws.sent, [f"m{i}" for i in range(total)])
    stats = publisher.stats()
    assert stats["queue_full_waits"] >= 1, stats
    assert stats["received"] == total and stats["skipped"] == 0
