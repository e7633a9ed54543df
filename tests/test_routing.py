"""Routing of received messages to the manager's WebSockets (SPEC 1.1)."""

from __future__ import annotations

import pytest

from support import FailingWebSocket, connect_user, unique, wait_for, wait_for_sent

pytestmark = pytest.mark.timeout(30)


async def test_upload_message_reaches_every_socket_of_every_subscriber(publisher, manager) -> None:
    """upload:{id} goes to all sockets of all users subscribed to it, and to nobody else."""
    upload = unique("upload")
    alice = await connect_user(manager, unique("alice"), sockets=2, uploads=[upload])
    bob = await connect_user(manager, unique("bob"), sockets=1, uploads=[upload])
    carol_id = unique("carol")
    [carol] = await connect_user(manager, carol_id, uploads=[unique("other-upload")])
    await publisher.start()

    await publisher.publish_progress(upload, "50%")
    await publisher.publish_to_user(carol_id, "marker")

    for ws in [*alice, *bob]:
        await wait_for_sent(ws, 1)
    await wait_for_sent(carol, 1)
    for ws in [*alice, *bob]:
        assert ws.sent == ["50%"], ws
    assert carol.sent == ["marker"], "a user not subscribed to the upload received it"


async def test_user_message_reaches_every_socket_of_that_user_only(publisher, manager) -> None:
    """user:{id} goes to each of that user's sockets; other users get nothing."""
    alice_id = unique("alice")
    bob_id = unique("bob")
    alice = await connect_user(manager, alice_id, sockets=3)
    [bob] = await connect_user(manager, bob_id)
    await publisher.start()

    await publisher.publish_to_user(alice_id, "for alice")
    await publisher.publish_to_user(bob_id, "marker")

    await wait_for_sent(bob, 1)
    for ws in alice:
        await wait_for_sent(ws, 1)
        assert ws.sent == ["for alice"], ws
    assert bob.sent == ["marker"]


async def test_unrouted_channels_are_ignored(publisher, manager, aredis) -> None:
    """Other channels and uploads/users nobody follows deliver nothing to anyone."""
    upload = unique("upload")
    user = unique("alice")
    sockets = await connect_user(manager, user, sockets=2, uploads=[upload])
    await publisher.start()

    for channel in [
        "other:1",
        f"uploads:{upload}",
        f"xupload:{upload}",
        f"users:{user}",
        f"upload:{unique('nobody-follows')}",
        f"user:{unique('not-connected')}",
        f"upload:{upload}:extra",
    ]:
        await aredis.publish(channel, f"stray on {channel}")
    await aredis.publish(f"upload:{upload}", "marker")

    for ws in sockets:
        await wait_for_sent(ws, 1)
        assert ws.sent == ["marker"], ws


async def test_unsubscribed_user_gets_nothing(publisher, manager) -> None:
    """After unsubscribe_upload a user no longer receives that upload's progress."""
    upload = unique("upload")
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await publisher.start()

    await publisher.publish_progress(upload, "while subscribed")
    await wait_for_sent(ws, 1)
    await manager.unsubscribe_upload(user, upload)
    await publisher.publish_progress(upload, "after unsubscribe")
    await publisher.publish_to_user(user, "marker")

    await wait_for_sent(ws, 2)
    assert ws.sent == ["while subscribed", "marker"]


async def test_failing_socket_is_disconnected_and_others_still_receive(publisher, manager) -> None:
    """A socket whose send raises is removed via manager.disconnect; the rest keep receiving."""
    upload = unique("upload")
    alice_id = unique("alice")
    carol_id = unique("carol")
    [alice_ok] = await connect_user(manager, alice_id, uploads=[upload])
    alice_dead = FailingWebSocket("alice-dead")
    await manager.connect(alice_id, alice_dead)
    [bob] = await connect_user(manager, unique("bob"), uploads=[upload])
    carol_dead = FailingWebSocket("carol-dead")
    await manager.connect(carol_id, carol_dead)
    await manager.subscribe_upload(carol_id, upload)
    await publisher.start()

    await publisher.publish_progress(upload, "first")

    await wait_for_sent(alice_ok, 1)
    await wait_for_sent(bob, 1)
    await wait_for(
        lambda: alice_dead not in manager.user_connections.get(alice_id, ()),
        what="the failing socket of alice to be disconnected",
    )
    await wait_for(
        lambda: carol_id not in manager.user_connections,
        what="carol, whose only socket failed, to be disconnected",
    )
    assert alice_ok in manager.user_connections[alice_id]

    await publisher.publish_progress(upload, "second")
    await wait_for_sent(alice_ok, 2)
    await wait_for_sent(bob, 2)
    assert alice_ok.sent == ["first", "second"]
    assert bob.sent == ["first", "second"]
    assert alice_dead.attempts == 1
    assert carol_dead.attempts == 1
