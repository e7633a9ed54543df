"""Cross-instance delivery: what one backend instance publishes reaches the
WebSockets connected to another, through the shared Redis."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

import vuemantics_pubsub
from support import assert_exactly_once_in_order, connect_user, unique, wait_for_sent

pytestmark = pytest.mark.timeout(60)

SCRIPT = Path(__file__).with_name("remote_publisher.py")


def child_env() -> dict[str, str]:
    """The environment for a child that imports the same vuemantics_pubsub as this process."""
    env = dict(os.environ)
    package_parent = str(Path(vuemantics_pubsub.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env.pop("REDIS_URL", None)
    return env


async def test_publisher_in_another_process_reaches_local_sockets(
    publisher, manager, redis_server, tmp_path
) -> None:
    """A subprocess publishes; this process's listener routes it to its sockets, in order."""
    upload = unique("upload")
    user = unique("alice")
    sockets = await connect_user(manager, user, sockets=2, uploads=[upload])
    await publisher.start()
    count = 200

    child = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), redis_server.url, upload, user, str(count),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env(), cwd=tmp_path,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), timeout=30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0, f"publisher process failed:\n{err.decode(errors='replace')}"
    assert out.decode().strip() == f"published {count + 1}"

    expected = [f"remote {seq}" for seq in range(count)] + ["remote done"]
    for ws in sockets:
        await wait_for_sent(ws, len(expected), timeout=10)
        assert_exactly_once_in_order(ws.sent, expected)


async def test_every_instance_delivers_to_its_own_sockets(make_publisher) -> None:
    """Two publishers, each with its own manager: one publish reaches both instances' users."""
    from vuemantics_pubsub import ConnectionManager

    upload = unique("upload")
    manager_a, manager_b = ConnectionManager(), ConnectionManager()
    instance_a = make_publisher(manager=manager_a)
    instance_b = make_publisher(manager=manager_b)
    [on_a] = await connect_user(manager_a, unique("alice"), uploads=[upload])
    [on_b] = await connect_user(manager_b, unique("bob"), uploads=[upload])
    await instance_a.start()
    await instance_b.start()

    await instance_a.publish_progress(upload, "from a")
    await instance_b.publish_progress(upload, "from b")

    await wait_for_sent(on_a, 2)
    await wait_for_sent(on_b, 2)
    await asyncio.sleep(0.2)
    assert on_a.sent == ["from a", "from b"]
    assert on_b.sent == ["from a", "from b"]
