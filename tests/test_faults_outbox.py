"""The outbox: publishes made while Redis is unreachable are kept (bounded by count and by
bytes) and sent in order when it is back; overflow drops the OLDEST (a newer progress event
supersedes an older one), is counted in stats()['outbox_dropped'] and logged as a WARNING.

Each test runs its own redis-server, not started until the publishes are queued.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from support import assert_exactly_once_in_order, connect_user, seqs, unique, wait_for

pytestmark = pytest.mark.timeout(30)

LOGGER = "vuemantics_pubsub"
FAST = {"backoff_min": 0.02, "backoff_max": 0.25}
SETTLE = 0.3


async def publish_during_outage(publisher, upload: str, payloads: list[str]) -> float:
    """Publish every payload (awaited, one after another); return the slowest call's seconds."""
    slowest = 0.0
    for payload in payloads:
        began = time.monotonic()
        await asyncio.wait_for(publisher.publish_progress(upload, payload), timeout=2)
        slowest = max(slowest, time.monotonic() - began)
    return slowest


def overflow_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """WARNING-or-worse package log lines about the outbox overflowing."""
    found = []
    for record in caplog.records:
        text = record.getMessage().lower()
        if (record.name.startswith(LOGGER) and record.levelno >= logging.WARNING
                and "outbox" in text and any(w in text for w in ("overflow", "full", "drop"))):
            found.append(record.getMessage())
    return found


async def test_outbox_overflow_by_count_keeps_newest_in_order_and_counts_drops(
    make_private_redis, make_publisher, manager, caplog
) -> None:
    """Limit 100 messages, 250 published while Redis is down: after Redis returns exactly the
    newest 100 arrive, in order, once; outbox_dropped == 150; a WARNING says so."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_private_redis(start=False)
    limit, total = 100, 250
    publisher = make_publisher(
        redis_url=server.url, manager=manager, start_timeout=0.3,
        outbox_max_messages=limit, **FAST,
    )
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    assert publisher.connected is False

    slowest = await publish_during_outage(publisher, upload, [f"o{i}" for i in range(total)])
    assert slowest < 0.25, f"a publish took {slowest:.3f} s while Redis was down (caller blocked)"
    stats = publisher.stats()
    assert stats["outbox_dropped"] == total - limit, stats
    assert stats["outbox_depth"] == limit, stats
    assert overflow_warnings(caplog), (
        "outbox overflow logged no WARNING; logged: "
        f"{[r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]!r}"
    )

    await asyncio.to_thread(server.start)
    last = f"o{total - 1}"
    await wait_for(
        lambda: last in ws.sent, timeout=5,
        what=lambda: f"the newest message {last}; delivered {len(ws.sent)}, stats {publisher.stats()!r}",
    )
    await asyncio.sleep(SETTLE)
    assert_exactly_once_in_order(ws.sent, [f"o{i}" for i in range(total - limit, total)])
    stats = publisher.stats()
    assert stats["outbox_dropped"] == total - limit
    assert stats["outbox_depth"] == 0

    await publisher.publish_progress(upload, "after")
    await wait_for(lambda: "after" in ws.sent, timeout=3, what="a normal message after the outage")


async def test_outbox_overflow_by_bytes_keeps_newest_within_the_byte_bound(
    make_private_redis, make_publisher, manager, caplog
) -> None:
    """outbox_max_bytes=10,000 with 100-byte payloads: what is kept never exceeds the bound,
    is the newest contiguous run (oldest dropped), arrives in order once, and every dropped
    message is counted."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_private_redis(start=False)
    max_bytes, total, size = 10_000, 250, 100
    publisher = make_publisher(
        redis_url=server.url, manager=manager, start_timeout=0.3,
        outbox_max_bytes=max_bytes, **FAST,
    )
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()

    payloads = [f"b{i}|".ljust(size, "x") for i in range(total)]
    await publish_during_outage(publisher, upload, payloads)
    stats = publisher.stats()
    kept = stats["outbox_depth"]
    assert stats["outbox_bytes"] <= max_bytes, stats
    # each entry costs its payload plus at most ~100 bytes of channel and framing
    assert max_bytes // (size + 100) <= kept <= max_bytes // size, stats
    assert stats["outbox_dropped"] == total - kept, stats
    assert overflow_warnings(caplog), "outbox overflow (bytes) logged no WARNING"

    await asyncio.to_thread(server.start)
    await wait_for(
        lambda: payloads[-1] in ws.sent, timeout=5,
        what=lambda: f"the newest message; delivered {len(ws.sent)}, stats {publisher.stats()!r}",
    )
    await asyncio.sleep(SETTLE)
    assert_exactly_once_in_order(seqs([p.split("|")[0] for p in ws.sent], "b"), list(range(total - kept, total)))
    assert ws.sent == payloads[total - kept:]

    await publisher.publish_progress(upload, "after")
    await wait_for(lambda: "after" in ws.sent, timeout=3, what="a normal message after the outage")


async def test_outbox_within_bound_loses_nothing_and_keeps_order(
    make_private_redis, make_publisher, manager, caplog
) -> None:
    """Below both bounds nothing is dropped: all of them arrive in order, once, and
    outbox_dropped stays 0 with no overflow warning."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_private_redis(start=False)
    publisher = make_publisher(
        redis_url=server.url, manager=manager, start_timeout=0.3,
        outbox_max_messages=100, **FAST,
    )
    upload = unique("upload")
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await publisher.start()

    await publish_during_outage(publisher, upload, [f"k{i}" for i in range(60)])
    await asyncio.wait_for(publisher.publish_to_user(user, "k60"), timeout=2)
    assert publisher.stats()["outbox_depth"] == 61

    await asyncio.to_thread(server.start)
    await wait_for(lambda: "k60" in ws.sent, timeout=5,
                   what=lambda: f"k60; delivered {ws.sent[-3:]!r}, stats {publisher.stats()!r}")
    await asyncio.sleep(SETTLE)
    assert_exactly_once_in_order(ws.sent, [f"k{i}" for i in range(61)])
    assert publisher.stats()["outbox_dropped"] == 0
    assert not overflow_warnings(caplog)
