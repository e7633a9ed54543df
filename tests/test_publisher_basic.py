"""Life cycle: start, publish, stop, restart — what the backend's lifespan relies on."""

from __future__ import annotations

import asyncio
import time

import pytest

from support import connect_user, next_message, unique, wait_for, wait_for_sent

pytestmark = pytest.mark.timeout(30)

# How long to keep listening for a duplicate that should not come.
SETTLE = 0.3


async def test_message_published_right_after_start_is_delivered(publisher, manager, aredis) -> None:
    """start() returns only once subscribed: nothing published after it is lost."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])

    await publisher.start()
    await aredis.publish(f"upload:{upload}", "from another instance")
    await publisher.publish_progress(upload, "from this instance")

    await wait_for_sent(ws, 2)
    assert ws.sent == ["from another instance", "from this instance"]
    assert publisher.connected is True


async def test_start_is_idempotent(publisher, manager) -> None:
    """A second start() neither fails nor subscribes twice: each message arrives once."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])

    await publisher.start()
    await publisher.start()
    await publisher.publish_progress(upload, "once")
    await publisher.publish_progress(upload, "marker")

    await wait_for(lambda: "marker" in ws.sent, what=lambda: f"the marker; got {ws.sent!r}")
    await asyncio.sleep(SETTLE)
    assert ws.sent == ["once", "marker"]


async def test_publish_returns_none(publisher, manager) -> None:
    """Both publish coroutines resolve to None, as the original's do."""
    user = unique("alice")
    upload = unique("upload")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await publisher.start()

    assert await publisher.publish_progress(upload, "progress") is None
    assert await publisher.publish_to_user(user, "direct") is None

    await wait_for_sent(ws, 2)
    assert ws.sent == ["progress", "direct"]


async def test_publish_works_without_start(publisher, raw_subscriber) -> None:
    """A publisher that was never started still publishes (a pure worker process)."""
    upload = unique("upload")
    user = unique("alice")
    pubsub = await raw_subscriber(f"upload:{upload}", f"user:{user}")

    await publisher.publish_progress(upload, "progress")
    await publisher.publish_to_user(user, "direct")

    first = await next_message(pubsub)
    second = await next_message(pubsub)
    assert (first["channel"], first["data"]) == (f"upload:{upload}".encode(), b"progress")
    assert (second["channel"], second["data"]) == (f"user:{user}".encode(), b"direct")


async def test_stop_is_idempotent_and_fast(publisher, manager) -> None:
    """stop() twice after some traffic: no error, each call well under the original's 2 s."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    for i in range(100):
        await publisher.publish_progress(upload, f"m{i}")
    await wait_for_sent(ws, 100)

    for attempt in ("first", "second"):
        began = time.monotonic()
        await publisher.stop()
        took = time.monotonic() - began
        assert took < 1.0, f"{attempt} stop() took {took:.3f} s"
    assert publisher.connected is False


async def test_stop_without_start_is_fast(publisher) -> None:
    """stop() on a publisher that never started returns at once without error."""
    began = time.monotonic()
    await publisher.stop()
    assert time.monotonic() - began < 1.0


async def test_start_after_stop_delivers_again(publisher, manager) -> None:
    """A stopped publisher can be started again and routes messages as before."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])

    await publisher.start()
    await publisher.publish_progress(upload, "before stop")
    await wait_for_sent(ws, 1)
    await publisher.stop()

    await publisher.start()
    assert publisher.connected is True
    await publisher.publish_progress(upload, "after restart")
    await wait_for_sent(ws, 2)
    await asyncio.sleep(SETTLE)
    assert ws.sent == ["before stop", "after restart"]
