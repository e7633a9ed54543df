"""Delivery to WebSockets whose send_text waits, fails after waiting, or is not a coroutine:
order per socket is kept and every outcome is what the original would have produced."""

from __future__ import annotations

import asyncio

import pytest

from support import FakeWebSocket, assert_exactly_once_in_order, unique, wait_for

pytestmark = pytest.mark.timeout(30)


class SlowWebSocket:
    """send_text really suspends (like a transport that applies back-pressure)."""

    def __init__(self, delay: float = 0.001) -> None:
        self.delay = delay
        self.sent: list[str] = []

    async def send_text(self, data: str) -> None:
        await asyncio.sleep(self.delay)
        self.sent.append(data)


class FailsAfterWaiting:
    def __init__(self) -> None:
        self.attempts = 0

    async def send_text(self, data: str) -> None:
        self.attempts += 1
        await asyncio.sleep(0.001)
        raise ConnectionError("peer went away")


class FutureWebSocket:
    """send_text is a plain function returning a Future (not a coroutine)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_text(self, data: str) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()

        def finish() -> None:
            self.sent.append(data)
            fut.set_result(None)

        asyncio.get_running_loop().call_later(0.0005, finish)
        return fut


async def test_sockets_that_wait_still_get_every_message_in_order(make_publisher, manager) -> None:
    """Slow, future-returning and instant sockets of one user each receive all 300, in order."""
    upload, user = unique("upload"), unique("alice")
    slow, fut_ws, fast = SlowWebSocket(), FutureWebSocket(), FakeWebSocket()
    for ws in (slow, fut_ws, fast):
        await manager.connect(user, ws)
    await manager.subscribe_upload(user, upload)
    publisher = make_publisher(manager=manager)
    await publisher.start()

    expected = [f"m{i}" for i in range(300)]
    await asyncio.gather(*(publisher.publish_progress(upload, m) for m in expected))
    for ws in (slow, fut_ws, fast):
        await wait_for(lambda ws=ws: len(ws.sent) >= len(expected), timeout=15,
                       what=f"{type(ws).__name__} to receive 300 messages")
        assert_exactly_once_in_order(ws.sent, expected)
    assert publisher.stats()["delivered"] == 3 * len(expected)


async def test_socket_failing_after_a_wait_is_disconnected_once(make_publisher, manager) -> None:
    """A send that fails after suspending disconnects that socket; the user's other socket
    keeps receiving."""
    upload, user = unique("upload"), unique("bob")
    bad, good = FailsAfterWaiting(), FakeWebSocket()
    await manager.connect(user, bad)
    await manager.connect(user, good)
    await manager.subscribe_upload(user, upload)
    publisher = make_publisher(manager=manager)
    await publisher.start()

    for i in range(20):
        await publisher.publish_progress(upload, f"m{i}")
    await wait_for(lambda: len(good.sent) == 20, timeout=5, what="20 messages on the good socket")
    await wait_for(lambda: bad not in manager.user_connections.get(user, ()), timeout=5,
                   what="the failing socket to be disconnected")
    assert good.sent == [f"m{i}" for i in range(20)]
    assert bad.attempts >= 1
    assert publisher.stats()["send_failed"] == 1
