"""One WebSocket whose send_text never returns must not hold up any other socket beyond
send_timeout; it is disconnected from the manager and counted (SPEC §3 dispatch, issue 3)."""

from __future__ import annotations

import asyncio
import time

import pytest

from support import HangingWebSocket, TimedWebSocket, assert_exactly_once_in_order, unique, wait_for

pytestmark = pytest.mark.timeout(30)

SEND_TIMEOUT = 0.5


async def test_hung_socket_does_not_delay_others_and_is_disconnected(
    make_publisher, manager
) -> None:
    """alice has a stuck socket and a good one, bob a good one, all on one upload.

    Every message reaches both good sockets, in order, each within send_timeout of its
    publish; the stuck socket is removed from the manager within send_timeout (+ margin),
    got exactly one send attempt, and stats()['send_timeouts'] == 1. alice's good socket
    stays connected and keeps receiving.
    """
    publisher = make_publisher(manager=manager, send_timeout=SEND_TIMEOUT)
    upload = unique("upload")
    alice, bob = unique("alice"), unique("bob")
    stuck = HangingWebSocket("alice-stuck")
    alice_ok, bob_ok = TimedWebSocket("alice-ok"), TimedWebSocket("bob-ok")
    await manager.connect(alice, stuck)
    await manager.connect(alice, alice_ok)
    await manager.connect(bob, bob_ok)
    await manager.subscribe_upload(alice, upload)
    await manager.subscribe_upload(bob, upload)
    await publisher.start()

    count = 20
    published_at: list[float] = []
    began = time.monotonic()
    for i in range(count):
        published_at.append(time.monotonic())
        await publisher.publish_progress(upload, f"m{i}")
        await asyncio.sleep(0.02)  # spread over ~0.4 s, i.e. while the stuck send is pending

    expected = [f"m{i}" for i in range(count)]
    for ws in (alice_ok, bob_ok):
        await wait_for(lambda ws=ws: len(ws.sent) >= count, timeout=SEND_TIMEOUT + 1,
                       what=lambda ws=ws: f"{ws.name} to get {count}; it has {ws.sent!r}")
        assert_exactly_once_in_order(ws.sent, expected)
        delays = [t - p for t, p in zip(ws.times, published_at)]
        assert max(delays) < SEND_TIMEOUT, (
            f"{ws.name}: slowest delivery {max(delays):.3f} s, beyond send_timeout={SEND_TIMEOUT}"
        )

    await wait_for(
        lambda: stuck not in manager.user_connections.get(alice, set()),
        timeout=SEND_TIMEOUT * 1.25 + 1.0,
        what="the stuck socket to be disconnected from the manager",
    )
    gone_at = time.monotonic() - began
    assert gone_at < SEND_TIMEOUT * 1.25 + 0.5, f"the stuck socket was dropped only after {gone_at:.3f} s"
    assert alice_ok in manager.user_connections.get(alice, set()), "alice's good socket was dropped too"
    assert bob_ok in manager.user_connections.get(bob, set())
    assert stuck.attempts == 1, f"the stuck socket got {stuck.attempts} send attempts"
    assert publisher.stats()["send_timeouts"] == 1, publisher.stats()
    assert publisher.stats()["send_failed"] == 0, publisher.stats()

    await publisher.publish_progress(upload, "after")
    await wait_for(lambda: alice_ok.sent[-1:] == ["after"] and bob_ok.sent[-1:] == ["after"],
                   timeout=2, what="delivery after the stuck socket was dropped")
    await asyncio.sleep(0.2)
    assert stuck.attempts == 1
    assert publisher.stats()["send_timeouts"] == 1


async def test_two_hung_sockets_each_time_out_once_and_others_keep_order(
    make_publisher, manager
) -> None:
    """Two users each with a stuck socket: both are dropped (send_timeouts == 2), and a third
    user's socket receives a long burst in order without waiting for either."""
    publisher = make_publisher(manager=manager, send_timeout=SEND_TIMEOUT)
    upload = unique("upload")
    users = [unique("u") for _ in range(3)]
    stuck = [HangingWebSocket(f"stuck{i}") for i in range(2)]
    good = TimedWebSocket("good")
    for user, ws in zip(users, [*stuck, good]):
        await manager.connect(user, ws)
        await manager.subscribe_upload(user, upload)
    await publisher.start()

    count = 500
    began = time.monotonic()
    for i in range(count):
        await publisher.publish_progress(upload, f"n{i}")
    await wait_for(lambda: len(good.sent) >= count, timeout=SEND_TIMEOUT,
                   what=lambda: f"the good socket to get {count} within send_timeout; it has {len(good.sent)}")
    assert good.times[-1] - began < SEND_TIMEOUT
    assert_exactly_once_in_order(good.sent, [f"n{i}" for i in range(count)])

    await wait_for(lambda: all(u not in manager.user_connections for u in users[:2]),
                   timeout=SEND_TIMEOUT * 1.25 + 1.0, what="both stuck sockets to be disconnected")
    assert [ws.attempts for ws in stuck] == [1, 1]
    assert publisher.stats()["send_timeouts"] == 2, publisher.stats()
