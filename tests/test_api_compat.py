"""The methods behave like the original's coroutine methods wherever a caller could tell:
create_task(), asyncio.run(), gather(), run_until_complete() outside a running loop, errors
raised at await time, and a warning for one that is never awaited."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from support import FakeWebSocket, connect_user, unique, wait_for
from vuemantics_pubsub import ConnectionManager, UploadProgressPublisher

pytestmark = pytest.mark.timeout(30)


async def test_methods_return_coroutines_that_create_task_accepts(make_publisher, manager) -> None:
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    publisher = make_publisher(manager=manager)
    start = publisher.start()
    assert asyncio.iscoroutine(start)
    await asyncio.create_task(start)
    task = asyncio.create_task(publisher.publish_progress(upload, "from a task"))
    assert await task is None
    results = await asyncio.gather(publisher.publish_progress(upload, "g1"),
                                   publisher.publish_progress(upload, "g2"))
    assert results == [None, None]
    await wait_for(lambda: len(ws.sent) == 3, timeout=5, what="3 messages")
    assert ws.sent == ["from a task", "g1", "g2"]


async def test_bad_message_raises_when_awaited_like_the_original(make_publisher, manager) -> None:
    """The original calls model_dump_json() inside the coroutine: the error comes at await."""
    publisher = make_publisher(manager=manager)
    pending = publisher.publish_progress("1", object())  # no error yet
    with pytest.raises(TypeError):
        await pending
    assert await publisher.publish_progress("1", "still works") is None


async def test_an_awaitable_cannot_be_awaited_twice(make_publisher, manager) -> None:
    publisher = make_publisher(manager=manager)
    once = publisher.publish_progress("1", "x")
    await once
    with pytest.raises(RuntimeError, match="already awaited"):
        await once


def test_never_awaited_call_warns_like_a_coroutine(redis_server) -> None:
    publisher = UploadProgressPublisher(redis_server.url, manager=ConnectionManager())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        publisher.publish_progress("1", "forgotten")
        gc.collect()
    assert any(issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)
               for w in caught), [str(w.message) for w in caught]


def test_asyncio_run_and_run_until_complete_take_the_methods(redis_server) -> None:
    """asyncio.run(pub.start()) and loop.run_until_complete(pub.stop()) work, as with the
    original's coroutines (the loop is running by the time the call starts)."""
    manager = ConnectionManager()
    ws = FakeWebSocket()
    publisher = UploadProgressPublisher(redis_server.url, manager=manager)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(manager.connect("u", ws))
        loop.run_until_complete(manager.subscribe_upload("u", "42"))
        loop.run_until_complete(publisher.start())
        loop.run_until_complete(publisher.publish_progress("42", "hi"))

        async def settle() -> None:
            await wait_for(lambda: ws.sent == ["hi"], timeout=5, what="the message")

        loop.run_until_complete(settle())
        loop.run_until_complete(publisher.stop())
    finally:
        loop.close()
    assert publisher.running is False
    other = UploadProgressPublisher(redis_server.url, manager=ConnectionManager())
    asyncio.run(other.start())
    asyncio.run(other.stop())
