"""Publishing to a frozen Redis (SIGSTOP): TCP still accepts the bytes but nothing answers.
Callers are released after publish_timeout instead of waiting for the whole freeze, and the
messages are still delivered, once and in order, when Redis resumes."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from support import connect_user, unique, wait_for

pytestmark = pytest.mark.timeout(30)


async def test_publish_to_frozen_redis_returns_after_publish_timeout_and_is_delivered_later(
    private_redis, make_publisher, manager, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="vuemantics_pubsub")
    publisher = make_publisher(
        redis_url=private_redis.url, manager=manager, publish_timeout=0.3,
        ping_interval=5.0, backoff_min=0.02, backoff_max=0.25,
    )
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    await publisher.publish_progress(upload, "before")
    await wait_for(lambda: ws.sent == ["before"], timeout=3, what="the first message")

    private_redis.stop_process()
    try:
        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(publisher.publish_progress(upload, f"frozen {i}") for i in range(5))),
            timeout=3,
        )
        waited = time.monotonic() - began
        assert 0.25 <= waited < 1.0, f"callers waited {waited:.3f} s (publish_timeout=0.3)"
        assert publisher.stats()["publish_queued"] >= 5
        assert any("not acknowledged" in r.getMessage() for r in caplog.records
                   if r.levelno >= logging.WARNING), "no warning about the late acknowledgements"
    finally:
        private_redis.cont()

    expected = ["before"] + [f"frozen {i}" for i in range(5)]
    await wait_for(lambda: len(ws.sent) >= len(expected), timeout=5,
                   what=lambda: f"the frozen-time messages after SIGCONT; got {ws.sent!r}")
    await asyncio.sleep(0.3)
    assert ws.sent == expected
    await publisher.publish_progress(upload, "after")
    await wait_for(lambda: ws.sent[-1:] == ["after"], timeout=3, what="a message after the freeze")
