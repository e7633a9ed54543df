"""Bad input gets a clear exception; module-level init/get behave as the original's."""

from __future__ import annotations

import pytest

import vuemantics_pubsub
from vuemantics_pubsub import ConnectionManager, UploadProgressPublisher, get_publisher, init_publisher
from support import connect_user, next_message, unique, wait_for_sent

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "message", [None, 42, {"action": "upload_progress"}, ["a"], 1.5],
    ids=["None", "int", "dict", "list", "float"],
)
async def test_message_of_wrong_type_raises_type_error(publisher, manager, message) -> None:
    """Neither str, bytes nor a model: TypeError, and the publisher keeps working."""
    upload = unique("upload")
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await publisher.start()

    with pytest.raises(TypeError):
        await publisher.publish_progress(upload, message)
    with pytest.raises(TypeError):
        await publisher.publish_to_user(user, message)

    await publisher.publish_progress(upload, "still working")
    await wait_for_sent(ws, 1)
    assert ws.sent == ["still working"]


async def test_message_over_max_message_bytes_raises_value_error(make_publisher, manager) -> None:
    """The limit counts encoded bytes; a message at the limit passes, one byte over fails."""
    limit = 1024
    publisher = make_publisher(manager=manager, max_message_bytes=limit)
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()

    for too_big in ["x" * (limit + 1), b"x" * (limit + 1), "é" * (limit // 2 + 1)]:
        with pytest.raises(ValueError):
            await publisher.publish_progress(upload, too_big)

    at_limit = "y" * limit
    await publisher.publish_progress(upload, at_limit)
    await wait_for_sent(ws, 1)
    assert ws.sent == [at_limit]


@pytest.mark.parametrize(
    "url",
    [
        "http://x",
        "redis://host:notaport",
        "rediss://localhost:6379/0",
        "redis://localhost:6379/notadb",
        "redis://user:s3cret@host:notaport/0",
        "redis://:s3cret@host:99999/0",
        "rediss://user:s3cret@localhost:6380/0",
        "ftp://user:s3cret@host/0",
    ],
)
def test_bad_url_raises_value_error_without_password(url) -> None:
    """An unusable URL fails at construction with a ValueError that never shows the password."""
    with pytest.raises(ValueError) as excinfo:
        UploadProgressPublisher(url, manager=ConnectionManager())
    message = str(excinfo.value)
    assert "url" in message.lower(), f"the error does not say the URL is the problem: {message!r}"
    assert "s3cret" not in message
    assert "s3cret" not in repr(excinfo.value)


def test_get_publisher_before_init_raises(monkeypatch) -> None:
    """get_publisher() without init_publisher() raises the original's RuntimeError."""
    monkeypatch.setattr(vuemantics_pubsub, "_publisher", None)

    with pytest.raises(RuntimeError) as excinfo:
        get_publisher()
    assert str(excinfo.value) == "UploadProgressPublisher not initialized. Call init_publisher()"


async def test_init_publisher_then_get_publisher_returns_it(monkeypatch, redis_server) -> None:
    """init_publisher() creates the process-wide instance; get_publisher() returns that object."""
    monkeypatch.setattr(vuemantics_pubsub, "_publisher", None)

    created = init_publisher(redis_server.url, manager=ConnectionManager())
    try:
        assert isinstance(created, UploadProgressPublisher)
        assert get_publisher() is created
        assert get_publisher() is created
    finally:
        await created.stop()


async def test_init_publisher_without_arguments_uses_redis_url(
    monkeypatch, redis_server, raw_subscriber
) -> None:
    """The backend's call, init_publisher() with no arguments, publishes to $REDIS_URL."""
    monkeypatch.setattr(vuemantics_pubsub, "_publisher", None)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    upload = unique("upload")
    pubsub = await raw_subscriber(f"upload:{upload}")

    created = init_publisher()
    try:
        await get_publisher().publish_progress(upload, "via REDIS_URL")
        assert (await next_message(pubsub))["data"] == b"via REDIS_URL"
    finally:
        await created.stop()
