"""Bad input gets the documented result and leaves the publisher working (SPEC §2, §4;
issue 3): ids are formatted exactly as an f-string would format them (so whatever an
f-string raises propagates, and whatever it produces is the channel), messages must be a
model, str or bytes, a raising model_dump_json propagates unchanged, a 64 MB payload is a
ValueError under the default 16 MiB max_message_bytes. After every bad call, a normal
message is published and delivered.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from support import connect_user, next_message, unique, wait_for

pytestmark = pytest.mark.timeout(30)

MB = 1024 * 1024


async def still_works(publisher, manager) -> None:
    """Publish a normal message on a fresh upload and a fresh user; both are delivered."""
    upload = unique("upload")
    user = unique("check")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await asyncio.wait_for(publisher.publish_progress(upload, "ok-progress"), timeout=5)
    await asyncio.wait_for(publisher.publish_to_user(user, "ok-direct"), timeout=5)
    await wait_for(lambda: ws.sent == ["ok-progress", "ok-direct"], timeout=5,
                   what=lambda: f"normal delivery after bad input; got {ws.sent!r}")


class FormatRaises:
    def __format__(self, spec: str) -> str:
        raise ZeroDivisionError("format exploded")


class StrRaises:
    def __str__(self) -> str:
        raise KeyError("str exploded")


class FormatReturnsInt:
    def __format__(self, spec: str) -> object:
        return 42


class CustomFormat:
    def __format__(self, spec: str) -> str:
        return "custom-formatted"


@pytest.mark.parametrize(
    "bad_id", [FormatRaises(), StrRaises(), FormatReturnsInt()],
    ids=["__format__-raises", "__str__-raises", "__format__-returns-int"],
)
async def test_id_that_an_f_string_cannot_format_raises_what_the_f_string_raises(
    publisher, manager, bad_id
) -> None:
    """The exception is the same type (and text) an f-string raises; nothing is published."""
    with pytest.raises(BaseException) as expected:
        f"upload:{bad_id}"
    await publisher.start()

    for call in (publisher.publish_progress, publisher.publish_to_user):
        with pytest.raises(type(expected.value)) as got:
            await call(bad_id, "never sent")
        assert str(got.value) == str(expected.value)
    await still_works(publisher, manager)


@pytest.mark.parametrize(
    "odd_id",
    [None, 42, -1, 1.5, True, b"raw", uuid.UUID("12345678-1234-5678-1234-567812345678"), CustomFormat()],
    ids=["None", "int", "negative", "float", "bool", "bytes", "UUID", "custom-__format__"],
)
async def test_unusual_id_types_publish_on_the_f_string_channel(
    publisher, manager, raw_subscriber, odd_id
) -> None:
    """publish_progress(x) publishes on f"upload:{x}" and publish_to_user(x) on f"user:{x}"
    (e.g. None -> "upload:None", b"raw" -> "upload:b'raw'")."""
    upload_channel, user_channel = f"upload:{odd_id}", f"user:{odd_id}"
    pubsub = await raw_subscriber(upload_channel, user_channel)
    await publisher.start()
    marker = unique("payload")

    await publisher.publish_progress(odd_id, marker + "-p")
    await publisher.publish_to_user(odd_id, marker + "-u")

    seen = []
    while len(seen) < 2:
        message = await next_message(pubsub)
        if message["data"].decode().startswith(marker):  # other tests may share "upload:None"
            seen.append((message["channel"].decode(), message["data"].decode()))
    assert seen == [(upload_channel, marker + "-p"), (user_channel, marker + "-u")]
    await still_works(publisher, manager)


async def test_none_id_routes_like_the_f_string(publisher, manager) -> None:
    """publish_progress(None, m) reaches the users subscribed to upload "None" (f"{None}")."""
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[f"{None}"])
    await publisher.start()
    marker = unique("none-id")
    await publisher.publish_progress(None, marker)
    await wait_for(lambda: marker in ws.sent, timeout=5, what=lambda: f"{marker}; got {ws.sent!r}")
    await still_works(publisher, manager)


async def test_empty_id_publishes_on_bare_prefix_and_routes(publisher, manager, raw_subscriber) -> None:
    """An empty id publishes on "upload:" / "user:" (as f"upload:{''}" would); users subscribed
    to upload "" and the user "" receive it."""
    pubsub = await raw_subscriber("upload:", "user:")
    follower = unique("alice")
    [on_upload] = await connect_user(manager, follower, uploads=[""])
    [as_empty_user] = await connect_user(manager, "")
    await publisher.start()
    marker = unique("empty-id")

    await publisher.publish_progress("", marker + "-p")
    await publisher.publish_to_user("", marker + "-u")

    first, second = await next_message(pubsub), await next_message(pubsub)
    assert (first["channel"], second["channel"]) == (b"upload:", b"user:")
    await wait_for(lambda: marker + "-p" in on_upload.sent, timeout=5,
                   what=lambda: f"delivery to upload ''; got {on_upload.sent!r}")
    await wait_for(lambda: marker + "-u" in as_empty_user.sent, timeout=5,
                   what=lambda: f"delivery to user ''; got {as_empty_user.sent!r}")
    assert marker + "-u" not in on_upload.sent
    await still_works(publisher, manager)


class NoModel:
    model_dump_json = None  # present but not callable


@pytest.mark.parametrize(
    "message", [object(), {"a", "b"}, NoModel(), 3j],
    ids=["object", "set", "model_dump_json-not-callable", "complex"],
)
async def test_message_of_wrong_type_raises_type_error_and_keeps_working(
    publisher, manager, message
) -> None:
    """Not a model, str or bytes: TypeError from both publish calls; nothing breaks."""
    await publisher.start()
    for call in (publisher.publish_progress, publisher.publish_to_user):
        with pytest.raises(TypeError):
            await call(unique("x"), message)
    await still_works(publisher, manager)


async def test_missing_or_extra_arguments_raise_type_error(publisher, manager) -> None:
    await publisher.start()
    for args in [(), ("only-id",), ("id", "msg", "extra")]:
        with pytest.raises(TypeError):
            await publisher.publish_progress(*args)
        with pytest.raises(TypeError):
            await publisher.publish_to_user(*args)
    await still_works(publisher, manager)


class Boom(Exception):
    pass


class RaisingModel:
    def __init__(self) -> None:
        self.error = Boom("cannot serialize this model")

    def model_dump_json(self) -> str:
        raise self.error


async def test_model_dump_json_that_raises_propagates_unchanged(publisher, manager) -> None:
    """The very exception object from model_dump_json reaches the caller, for both calls,
    before and after start(); the publisher keeps working."""
    model = RaisingModel()
    for started in (False, True):
        if started:
            await publisher.start()
        for call in (publisher.publish_progress, publisher.publish_to_user):
            with pytest.raises(Boom) as excinfo:
                await call(unique("id"), model)
            assert excinfo.value is model.error
    await still_works(publisher, manager)
    assert publisher.stats()["publish_failed"] == 0


class HugeModel:
    def model_dump_json(self) -> str:
        return "m" * (64 * MB)


@pytest.mark.parametrize("kind", ["str", "bytes", "model"])
async def test_64_mb_payload_raises_value_error_and_keeps_working(publisher, manager, kind) -> None:
    """64 MB against the default max_message_bytes (16 MiB): ValueError naming the limit;
    nothing reaches the sockets; a normal message goes through afterwards."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    payload = {"str": lambda: "h" * (64 * MB), "bytes": lambda: b"h" * (64 * MB), "model": HugeModel}[kind]()

    with pytest.raises(ValueError) as excinfo:
        await publisher.publish_progress(upload, payload)
    text = str(excinfo.value).lower()
    assert "max_message_bytes" in text or "too large" in text or "limit" in text, excinfo.value
    with pytest.raises(ValueError):
        await publisher.publish_to_user(unique("u"), payload)
    del payload

    await still_works(publisher, manager)
    await asyncio.sleep(0.2)
    assert ws.sent == []
    stats = publisher.stats()
    assert stats["outbox_depth"] == 0 and stats["publish_failed"] == 0, stats
