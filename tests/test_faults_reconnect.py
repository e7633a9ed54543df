"""Redis goes away and comes back: killed, not yet started, connection killed, frozen,
wrong password (SPEC §4, issue 3).

Every test here runs its own redis-server (``private_redis``), never the shared one.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from support import (
    TimedWebSocket,
    assert_exactly_once_in_order,
    connect_user,
    seqs,
    unique,
    wait_for,
    wait_for_sent,
)

pytestmark = pytest.mark.timeout(30)

LOGGER = "vuemantics_pubsub"
# Quick reconnects for the tests: exponential between these, with jitter.
FAST = {"backoff_min": 0.02, "backoff_max": 0.25}
# How long to keep listening for a duplicate or a late message that should not come.
SETTLE = 0.3


def package_records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(LOGGER) and r.levelno >= level]


async def test_sigkill_mid_stream_resumes_within_1s_and_outage_messages_arrive_once_in_order(
    private_redis, make_publisher, manager
) -> None:
    """redis-server SIGKILLed while a producer keeps publishing, then restarted on the same port.

    Asserted:
    - publishing callers are not blocked by the outage (publishes keep completing, each fast);
    - the first delivery after the restart comes within 1 s of Redis answering PING again;
    - every message whose publish call began after the kill was observed (the publishing
      connection reported down) is delivered exactly once, in order; nothing is delivered that
      was not published, and everything delivered before the kill is never delivered again.
    Messages in flight at the instant of the kill may be lost or delivered (at-least-once).
    """
    publisher = make_publisher(redis_url=private_redis.url, manager=manager, **FAST)
    upload = unique("upload")
    user = unique("alice")
    ws = TimedWebSocket("alice")
    await manager.connect(user, ws)
    await manager.subscribe_upload(user, upload)
    await publisher.start()

    next_seq = 0
    latency: dict[int, float] = {}
    done = asyncio.Event()

    async def produce() -> None:
        nonlocal next_seq
        while not done.is_set():
            seq = next_seq
            next_seq += 1
            began = time.monotonic()
            await publisher.publish_progress(upload, f"s{seq}")
            latency[seq] = time.monotonic() - began
            await asyncio.sleep(0.002)

    producer = asyncio.create_task(produce())
    try:
        await wait_for_sent(ws, 50)
        delivered_before_kill = seqs(ws.sent, "s")

        await asyncio.to_thread(private_redis.kill)
        await wait_for(
            lambda: not publisher.stats()["publisher_connected"], timeout=2,
            what="stats()['publisher_connected'] to become False after SIGKILL",
        )
        first_after_kill = next_seq
        await asyncio.sleep(0.4)  # the outage, producer still publishing
        last_in_outage = next_seq - 1

        ready_at = await asyncio.to_thread(private_redis.start)
        await wait_for(lambda: publisher.connected, timeout=3,
                       what=lambda: f"the listener to re-subscribe; stats {publisher.stats()!r}")
        resubscribed = time.monotonic() - ready_at
        began_after = next_seq
        await wait_for(lambda: next_seq >= began_after + 50, timeout=5,
                       what="50 more publishes after the re-subscription")
    finally:
        done.set()
        await asyncio.wait_for(producer, timeout=5)
    last = next_seq - 1

    await wait_for(
        lambda: f"s{last}" in ws.sent, timeout=5,
        what=lambda: f"the last message s{last}; last delivered {ws.sent[-3:]!r}, stats {publisher.stats()!r}",
    )
    await asyncio.sleep(SETTLE)

    outage = range(first_after_kill, last_in_outage + 1)
    assert len(outage) >= 20, (
        f"only {len(outage)} publishes completed during a 0.4 s outage: callers are blocked"
    )
    slowest = max(latency[s] for s in outage)
    assert slowest < 0.25, f"a publish during the outage took {slowest:.3f} s (caller blocked)"

    after_restart = [t for t in ws.times if t > ready_at]
    assert after_restart, "nothing delivered after the restart"
    resumed = after_restart[0] - ready_at
    print(f"\nmeasured: after SIGKILL + restart, delivery resumed {resumed:.3f} s after Redis "
          f"accepted connections (listener re-subscribed after {resubscribed:.3f} s); "
          f"{len(outage)} messages published during the outage")
    assert resumed < 1.0, (
        f"delivery resumed {resumed:.3f} s after Redis accepted connections "
        f"(listener re-subscribed after {resubscribed:.3f} s)"
    )

    got = seqs(ws.sent, "s")
    lost = [s for s in outage if s not in got]
    assert not lost, (
        f"{len(lost)} of the {len(outage)} messages published during the outage "
        f"(s{first_after_kill}..s{last_in_outage}) were never delivered (first lost: s{lost[0]}); "
        f"the listener re-subscribed {resubscribed:.3f} s after Redis was back; "
        f"stats {publisher.stats()!r}"
    )
    assert set(got) <= set(range(last + 1)), f"unexpected messages: {sorted(set(got) - set(range(last + 1)))[:5]}"
    for seq in delivered_before_kill:
        assert got.count(seq) == 1, f"s{seq} (delivered before the kill) delivered {got.count(seq)} times"
    assert_exactly_once_in_order(
        [s for s in got if s >= first_after_kill], list(range(first_after_kill, last + 1))
    )
    assert publisher.connected is True


async def test_start_without_redis_returns_within_start_timeout_then_flows_by_itself(
    make_private_redis, make_publisher, manager, caplog
) -> None:
    """No Redis at start(): start() returns within start_timeout with a WARNING, and once
    Redis is started later (same port) messages flow with no call from the user."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_private_redis(start=False)
    start_timeout = 0.5
    publisher = make_publisher(
        redis_url=server.url, manager=manager, start_timeout=start_timeout, **FAST
    )
    upload = unique("upload")
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[upload])

    began = time.monotonic()
    await asyncio.wait_for(publisher.start(), timeout=5)
    took = time.monotonic() - began
    assert took < start_timeout + 0.3, f"start() took {took:.3f} s with start_timeout={start_timeout}"
    warnings = package_records(caplog)
    assert warnings, "start() with Redis down logged no WARNING"
    assert publisher.connected is False

    await asyncio.to_thread(server.start)
    subscribed = await wait_for(lambda: publisher.connected, timeout=3,
                                what=lambda: f"the listener to subscribe by itself; stats {publisher.stats()!r}")
    print(f"\nmeasured: start() returned after {took:.3f} s with Redis down; "
          f"subscribed {subscribed:.3f} s after Redis started")

    client = server.client()
    try:
        assert await asyncio.to_thread(client.publish, f"upload:{upload}", "from redis-py") == 1
    finally:
        client.close()
    await wait_for_sent(ws, 1)
    await asyncio.wait_for(publisher.publish_progress(upload, "from the publisher"), timeout=3)
    await asyncio.wait_for(publisher.publish_to_user(user, "direct"), timeout=3)
    await wait_for_sent(ws, 3)
    await asyncio.sleep(SETTLE)
    assert ws.sent == ["from redis-py", "from the publisher", "direct"]


async def test_client_kill_type_pubsub_listener_reconnects_and_resubscribes(
    private_redis, make_publisher, manager
) -> None:
    """CLIENT KILL TYPE pubsub cuts the listener: it reconnects, re-subscribes, delivers again."""
    publisher = make_publisher(redis_url=private_redis.url, manager=manager, **FAST)
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    await publisher.publish_progress(upload, "before")
    await wait_for_sent(ws, 1)
    before = publisher.stats()["listener_reconnects"]

    client = private_redis.client()
    try:
        killed = await asyncio.to_thread(client.execute_command, "CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1, "CLIENT KILL TYPE pubsub found no subscriber to kill"
        back = await wait_for(
            lambda: publisher.stats()["listener_reconnects"] > before and publisher.connected,
            timeout=2,
            what=lambda: f"the listener to reconnect and re-subscribe; stats {publisher.stats()!r}",
        )
        print(f"\nmeasured: re-subscribed {back:.3f} s after CLIENT KILL TYPE pubsub")
        patterns = await asyncio.to_thread(client.execute_command, "PUBSUB", "NUMPAT")
        assert patterns == 2, f"after the reconnect Redis has {patterns} patterns, expected 2"
        assert await asyncio.to_thread(client.publish, f"upload:{upload}", "from redis-py") == 1
    finally:
        client.close()
    await publisher.publish_progress(upload, "after")
    await wait_for_sent(ws, 3)
    await asyncio.sleep(SETTLE)
    assert ws.sent == ["before", "from redis-py", "after"]


async def test_sigstop_liveness_check_notices_within_deadline_and_resumes_after_sigcont(
    private_redis, make_publisher, manager
) -> None:
    """A frozen Redis looks alive to TCP: the listener's PING deadline notices within
    ping_interval + ping_timeout (+ margin), and delivery resumes after SIGCONT."""
    ping_interval, ping_timeout, margin = 0.3, 0.3, 0.4
    publisher = make_publisher(
        redis_url=private_redis.url, manager=manager, ping_interval=ping_interval,
        ping_timeout=ping_timeout, connect_timeout=0.5, **FAST,
    )
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    await publisher.publish_progress(upload, "before")
    await wait_for_sent(ws, 1)

    private_redis.stop_process()
    try:
        noticed = await wait_for(
            lambda: not publisher.stats()["connected"], timeout=ping_interval + ping_timeout + margin,
            what=lambda: f"stats()['connected'] to become False; stats {publisher.stats()!r}",
        )
        assert publisher.connected is False
        await asyncio.sleep(0.3)  # still frozen: it must keep trying, not give up
        assert publisher.connected is False
    finally:
        private_redis.cont()
    thawed = time.monotonic()

    back = await wait_for(lambda: publisher.connected, timeout=3,
                          what=lambda: f"re-subscription after SIGCONT; stats {publisher.stats()!r}")
    await asyncio.wait_for(publisher.publish_progress(upload, "after"), timeout=3)
    await wait_for(lambda: "after" in ws.sent, timeout=2,
                   what=lambda: f"delivery after SIGCONT; got {ws.sent!r}")
    resumed = time.monotonic() - thawed
    print(f"\nmeasured: frozen Redis noticed after {noticed:.3f} s; after SIGCONT re-subscribed "
          f"in {back:.3f} s, delivery resumed in {resumed:.3f} s")
    assert resumed < 2.0, f"delivery resumed {resumed:.3f} s after SIGCONT (re-subscribed after {back:.3f} s)"
    assert ws.sent[0] == "before" and ws.sent[-1] == "after"
    assert noticed <= ping_interval + ping_timeout + margin


async def test_wrong_password_clear_error_backoff_no_crash_then_right_password_works(
    make_private_redis, make_publisher, manager, caplog
) -> None:
    """requirepass with a wrong password in the URL: a clear error in the log and in
    stats()['last_error'] that never shows the password, reconnects with backoff (not a busy
    loop), no crash; the same server with the right password works."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    right, wrong = "right-Pa55word", "wr0ng-Secr3t-xyz"
    server = make_private_redis(password=right)
    publisher = make_publisher(
        redis_url=server.url_with(wrong), manager=manager, start_timeout=0.5,
        backoff_min=0.05, backoff_max=0.2,
    )
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])

    began = time.monotonic()
    await asyncio.wait_for(publisher.start(), timeout=5)
    assert time.monotonic() - began < 1.0
    assert publisher.connected is False
    # a publish is not blocked and does not raise: it waits in the outbox
    await asyncio.wait_for(publisher.publish_progress(upload, "queued"), timeout=1)

    client = server.client()
    try:
        first = (await asyncio.to_thread(client.info, "stats"))["total_connections_received"]
        await asyncio.sleep(1.0)
        second = (await asyncio.to_thread(client.info, "stats"))["total_connections_received"]
    finally:
        client.close()
    attempts = second - first
    assert 1 <= attempts < 30, f"{attempts} connection attempts in 1 s with backoff_max=0.2"

    stats = publisher.stats()
    error = stats["last_error"]
    assert error and ("auth" in error.lower() or "password" in error.lower()), (
        f"stats()['last_error'] does not say the password is wrong: {error!r}"
    )
    assert stats["connected"] is False
    logged = package_records(caplog)
    assert any("auth" in r.getMessage().lower() or "password" in r.getMessage().lower() for r in logged), (
        f"no WARNING/ERROR mentions auth/password: {[r.getMessage() for r in logged]!r}"
    )
    everything = [r.getMessage() for r in caplog.records] + [error, repr(publisher), publisher.redis_url, repr(stats)]
    leaks = [text for text in everything if wrong in text]
    assert not leaks, f"the password appears in: {leaks!r}"

    stop_began = time.monotonic()
    await asyncio.wait_for(publisher.stop(), timeout=5)
    assert time.monotonic() - stop_began < 2.0

    good = make_publisher(redis_url=server.url, manager=manager)
    await asyncio.wait_for(good.start(), timeout=5)
    assert good.connected is True
    await good.publish_progress(upload, "with the right password")
    await wait_for(lambda: "with the right password" in ws.sent, timeout=3,
                   what=lambda: f"delivery with the right password; got {ws.sent!r}")
