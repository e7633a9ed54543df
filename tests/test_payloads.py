"""What a WebSocket receives for each kind of message and id."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid

import pytest

# the backend's message models (core/websocket/messages.py), reproduced in shape by the test app
from app.messages import ProcessingStage, UploadProgressPayload, UploadProgressUpdate
from support import connect_user, next_message, unique, wait_for, wait_for_sent

pytestmark = pytest.mark.timeout(30)


def progress_update(upload_id: str, **overrides) -> UploadProgressUpdate:
    fields = dict(
        upload_id=upload_id, status="processing", stage=ProcessingStage.DESCRIPTION_AUDIT,
        progress_percent=42, message="Generating description",
    )
    fields.update(overrides)
    return UploadProgressUpdate(payload=UploadProgressPayload(**fields))


# -- tests ---------------------------------------------------------------------------------

async def test_pydantic_model_is_sent_as_its_json(publisher, manager) -> None:
    """A backend UploadProgressUpdate arrives as exactly its model_dump_json() text."""
    upload = str(uuid.uuid4())
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await publisher.start()
    progress = progress_update(upload)
    failure = progress_update(
        upload, status="failed", stage=ProcessingStage.FAILED, progress_percent=100,
        message="Failed", error_message="model timed out", description_audit_score=3,
    )

    await publisher.publish_progress(upload, progress)
    await publisher.publish_to_user(user, failure)

    await wait_for_sent(ws, 2)
    assert ws.sent == [progress.model_dump_json(), failure.model_dump_json()]
    assert UploadProgressUpdate.model_validate_json(ws.sent[0]) == progress
    assert UploadProgressUpdate.model_validate_json(ws.sent[1]) == failure


async def test_uuid_and_int_ids_are_formatted_like_fstrings(publisher, raw_subscriber) -> None:
    """UUID and int ids name the channels f"upload:{id}" / f"user:{id}" would."""
    upload_uuid = uuid.uuid4()
    upload_int = int.from_bytes(uuid.uuid4().bytes[:6], "big")
    user_uuid = uuid.uuid4()
    user_int = int.from_bytes(uuid.uuid4().bytes[:6], "big")
    channels = [f"upload:{upload_uuid}", f"upload:{upload_int}", f"user:{user_uuid}", f"user:{user_int}"]
    pubsub = await raw_subscriber(*channels)

    await publisher.publish_progress(upload_uuid, "a")
    await publisher.publish_progress(upload_int, "b")
    await publisher.publish_to_user(user_uuid, "c")
    await publisher.publish_to_user(user_int, "d")

    received = [await next_message(pubsub) for _ in channels]
    assert [(m["channel"].decode(), m["data"]) for m in received] == list(
        zip(channels, [b"a", b"b", b"c", b"d"])
    )


async def test_uuid_and_int_ids_route_to_sockets(publisher, manager) -> None:
    """Messages published with UUID / int ids reach users subscribed under str(id)."""
    upload_uuid = uuid.uuid4()
    user_int = int.from_bytes(uuid.uuid4().bytes[:6], "big")
    [ws] = await connect_user(manager, str(user_int), uploads=[str(upload_uuid)])
    await publisher.start()

    await publisher.publish_progress(upload_uuid, "by uuid")
    await publisher.publish_to_user(user_int, "by int")

    await wait_for_sent(ws, 2)
    assert ws.sent == ["by uuid", "by int"]


async def test_non_ascii_text_arrives_intact(publisher, manager) -> None:
    """Emoji, CJK, accents and escapes survive the round trip unchanged."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    texts = [
        "🚀 upload done ✅ 🎉👩‍💻",
        "処理中です — 進捗 42%",
        "Crème brûlée, naïve façade, Ñandú, Ærøskøbing",
        '{"quote": "\\"", "nul": "\\u0000", "tab": "\t"}',
        "x\x00y",
    ]

    for text in texts:
        await publisher.publish_progress(upload, text)

    await wait_for_sent(ws, len(texts))
    assert ws.sent == texts


async def test_one_megabyte_payload_arrives_intact(publisher, manager) -> None:
    """A 1 MB message with multi-byte characters is delivered whole and unchanged."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    unit = "progress ✅ 進捗 café 🚀 "
    payload = unit * (1_000_000 // len(unit.encode()) + 1)
    assert len(payload.encode()) > 1_000_000

    await publisher.publish_progress(upload, payload)
    await publisher.publish_progress(upload, "after")

    await wait_for_sent(ws, 2, timeout=10)
    digest = lambda s: (len(s), hashlib.sha256(s.encode()).hexdigest())  # noqa: E731
    assert [digest(s) for s in ws.sent] == [digest(payload), digest("after")]


async def test_bytes_message_is_sent_as_is(publisher, manager, raw_subscriber) -> None:
    """bytes go to Redis byte for byte, and reach sockets as the decoded text."""
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    pubsub = await raw_subscriber(f"upload:{upload}")
    await publisher.start()
    raw = '{"status": "terminé", "note": "✅"}'.encode()

    await publisher.publish_progress(upload, raw)

    assert (await next_message(pubsub))["data"] == raw
    await wait_for_sent(ws, 1)
    assert ws.sent == [raw.decode()]


async def test_invalid_utf8_is_logged_skipped_and_does_not_stall(
    publisher, manager, aredis, caplog
) -> None:
    """A payload that is not UTF-8 is logged and counted; the next message arrives at once."""
    caplog.set_level(logging.WARNING, logger="vuemantics_pubsub")
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    await publisher.start()
    skipped_before = publisher.stats()["skipped"]

    await aredis.publish(f"upload:{upload}", b"\xff\xfe not utf-8")
    published_at = time.monotonic()
    await aredis.publish(f"upload:{upload}", "valid")

    await wait_for(lambda: ws.sent, timeout=0.5, what="the valid message after an invalid one")
    assert time.monotonic() - published_at < 0.5
    assert ws.sent == ["valid"]
    await wait_for(
        lambda: publisher.stats()["skipped"] == skipped_before + 1,
        timeout=2,
        what=lambda: f"stats()['skipped'] == {skipped_before + 1}; stats() = {publisher.stats()}",
    )
    warnings = [
        r for r in caplog.records
        if r.levelno >= logging.WARNING
        and (r.name == "vuemantics_pubsub" or r.name.startswith("vuemantics_pubsub."))
    ]
    assert warnings, "the invalid payload was not logged at WARNING or above"
