"""The URL forms of SPEC §2 reach a real server: a host name (resolved, not an IP), a unix
socket, and an ACL user with a password."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from support import connect_user, unique, wait_for

pytestmark = pytest.mark.timeout(30)


async def deliver_once(make_publisher, manager, url: str) -> None:
    upload = unique("upload")
    [ws] = await connect_user(manager, unique("alice"), uploads=[upload])
    publisher = make_publisher(redis_url=url, manager=manager)
    await publisher.start()
    assert publisher.connected, publisher.stats()
    await publisher.publish_progress(upload, "via " + url.split(":")[0])
    await wait_for(lambda: len(ws.sent) == 1, timeout=5, what="the message")
    assert publisher.stats()["published"] == 1


async def test_host_name_is_resolved(make_publisher, manager, redis_server) -> None:
    await deliver_once(make_publisher, manager, f"redis://localhost:{redis_server.port}/0")


async def test_acl_user_and_password(make_publisher, manager, redis_server) -> None:
    user, password = unique("acl-user"), "pa55:w@rd/x"
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    try:
        from urllib.parse import quote
        await deliver_once(make_publisher, manager,
                           f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{redis_server.port}/3")
    finally:
        client.execute_command("ACL", "DELUSER", user)
        client.close()


@pytest.fixture
def unix_redis(tmp_path: Path):
    path = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        yield path
    finally:
        proc.kill()
        proc.wait()


async def test_unix_socket(make_publisher, manager, unix_redis) -> None:
    await deliver_once(make_publisher, manager, f"unix://{unix_redis}?db=2")
