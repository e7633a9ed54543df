"""Many messages on one upload: all arrive at each socket, in order, exactly once."""

from __future__ import annotations

import asyncio
import json

import pytest

from support import assert_exactly_once_in_order, connect_user, unique, wait_for_sent

pytestmark = pytest.mark.timeout(60)

COUNT = 10_000
CHUNK = 500


def payloads(upload: str) -> list[str]:
    return [json.dumps({"upload_id": upload, "seq": seq}) for seq in range(COUNT)]


async def test_ten_thousand_concurrent_publishes_arrive_in_order(publisher, manager) -> None:
    """Publishes issued concurrently (gather, in chunks) reach two sockets in issue order."""
    upload = unique("upload")
    sockets = await connect_user(manager, unique("alice"), sockets=2, uploads=[upload])
    await publisher.start()
    expected = payloads(upload)

    for start in range(0, COUNT, CHUNK):
        results = await asyncio.gather(
            *(publisher.publish_progress(upload, p) for p in expected[start:start + CHUNK])
        )
        assert results == [None] * len(results)

    for ws in sockets:
        await wait_for_sent(ws, COUNT, timeout=30)
    await asyncio.sleep(0.2)  # room for any duplicate to show up
    for ws in sockets:
        assert_exactly_once_in_order(ws.sent, expected)


async def test_ten_thousand_raw_publishes_arrive_in_order(publisher, manager, aredis) -> None:
    """A burst from another Redis client (one pipeline) is routed in Redis's order."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    expected = payloads(upload)

    async with aredis.pipeline(transaction=False) as pipe:
        for p in expected:
            pipe.publish(f"upload:{upload}", p)
        receivers = await pipe.execute()
    assert min(receivers) >= 1, "the publisher's listener was not subscribed for every message"

    await wait_for_sent(ws, COUNT, timeout=30)
    await asyncio.sleep(0.2)
    assert_exactly_once_in_order(ws.sent, expected)
