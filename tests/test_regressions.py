"""Regression tests for bugs found in review: each reproduces the situation that used to hang,
stall or fail, in a subprocess with a hard timeout where a hang is possible."""

from __future__ import annotations

import asyncio
import time

import pytest

from support import FakeWebSocket, connect_user, run_python, unique, wait_for

pytestmark = pytest.mark.timeout(60)

# A redis-server the child script starts and stops itself (the parent cannot time it).
REDIS_CTL = r'''
import os, socket, subprocess, tempfile, time
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
class Redis:
    def __init__(self):
        self.port = free_port(); self.proc = None; self.dir = tempfile.mkdtemp()
    def start(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")
    def stop(self):
        if self.proc:
            self.proc.kill(); self.proc.wait(); self.proc = None
'''


class TimeoutUsingWebSocket(FakeWebSocket):
    """send_text uses asyncio.timeout(), which needs to run inside a Task (as the sends of
    real WebSocket libraries may)."""

    async def send_text(self, data: str) -> None:
        async with asyncio.timeout(1.0):
            await super().send_text(data)


async def test_send_text_runs_inside_a_task(make_publisher, manager) -> None:
    """A send_text using asyncio.timeout() works (it used to run outside any Task and fail)."""
    upload = unique("upload")
    ws = TimeoutUsingWebSocket()
    user = unique("alice")
    await manager.connect(user, ws)
    await manager.subscribe_upload(user, upload)
    publisher = make_publisher(manager=manager)
    await publisher.start()
    for i in range(5):
        await publisher.publish_progress(upload, f"m{i}")
    await wait_for(lambda: len(ws.sent) == 5, timeout=5, what="5 messages")
    assert ws.sent == [f"m{i}" for i in range(5)]
    assert ws in manager.user_connections[user]
    assert publisher.stats()["send_failed"] == 0


async def test_second_start_while_redis_is_down_returns_within_start_timeout(
    make_private_redis, make_publisher, manager
) -> None:
    """start() again while the first start is still waiting (timer already fired) is bounded
    too (it used to wait with no timer, forever)."""
    server = make_private_redis(start=False)
    publisher = make_publisher(redis_url=server.url, manager=manager, start_timeout=0.3)
    began = time.monotonic()
    await asyncio.wait_for(publisher.start(), timeout=3)
    await asyncio.wait_for(publisher.start(), timeout=3)
    assert time.monotonic() - began < 1.5
    assert publisher.connected is False


def test_listener_keeps_delivering_after_its_loop_closed_and_a_new_loop_starts_it() -> None:
    """Loop A started the publisher and closed without stop(); in loop B, start() and delivery
    work (the wake-up fd used to stay unwatched: nothing was delivered)."""
    code = REDIS_CTL + r'''
import asyncio
from vuemantics_pubsub import ConnectionManager, UploadProgressPublisher
class WS:
    def __init__(self): self.sent = []
    async def send_text(self, d): self.sent.append(d)
r = Redis(); r.start()
m = ConnectionManager(); ws = WS()
pub = UploadProgressPublisher(f"redis://127.0.0.1:{r.port}/0", manager=m)
async def a():
    await m.connect("u", ws); await m.subscribe_upload("u", "1")
    await pub.start()
asyncio.run(a())
async def b():
    await asyncio.wait_for(pub.start(), 3)
    # another instance publishes (not this publisher: its own publish would watch the queue)
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        s.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$8\r\nupload:1\r\n$5\r\nhello\r\n")
        s.recv(16)
    for _ in range(300):
        if ws.sent: break
        await asyncio.sleep(0.01)
    print("delivered", ws.sent, flush=True)
    await pub.stop()
asyncio.run(b())
r.stop()
'''
    rc, out, err = run_python(code, timeout=30)
    assert rc == 0, err
    assert "delivered ['hello']" in out, out + err


def test_stale_connection_record_does_not_freeze_a_new_loop() -> None:
    """A connection made for a closed loop, reported after Redis went away again, must not make
    the new loop wait for the current (endlessly retrying) connector: it used to freeze."""
    code = REDIS_CTL + r'''
import asyncio, time
from vuemantics_pubsub import UploadProgressPublisher
r = Redis()
pub = UploadProgressPublisher(f"redis://127.0.0.1:{r.port}/0", backoff_min=0.02, backoff_max=0.1)
async def a():
    await pub.publish_progress("1", "x")  # Redis down: queued, the connector keeps trying
asyncio.run(a())                          # loop A closed with the connector still running
r.start(); time.sleep(1.0)                # it connects and reports to a queue nobody watches
r.stop()
async def b():
    began = time.monotonic()
    await pub.publish_progress("1", "y")  # rebinding: new connector, Redis down again
    await asyncio.sleep(0.5)
    print("loop B alive after", round(time.monotonic() - began, 2), flush=True)
asyncio.run(b())
'''
    rc, out, err = run_python(code, timeout=20)
    assert rc == 0, err
    assert "loop B alive" in out, out + err


def test_forked_child_releases_an_inherited_publisher_whose_listener_waited_for_room() -> None:
    """fork() while the listener waits for queue room; the child frees the inherited publisher
    and exits (destroying the inherited condition variable used to wait forever)."""
    code = REDIS_CTL + r'''
import asyncio, gc, os, socket, time
from vuemantics_pubsub import UploadProgressPublisher
r = Redis(); r.start()
pub = UploadProgressPublisher(f"redis://127.0.0.1:{r.port}/0", queue_max_messages=1)
async def a(): await pub.start()
asyncio.run(a())            # closed without stop(): nobody drains the queue any more
s = socket.create_connection(("127.0.0.1", r.port))
s.sendall(b"".join(b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nuser:u\r\n$1\r\nx\r\n" for _ in range(5)))
time.sleep(0.5); s.close()  # the listener now waits for room
pid = os.fork()
if pid == 0:
    del pub
    gc.collect()
    os._exit(0)
for _ in range(100):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9); os.waitpid(pid, 0)
    print("child hung", flush=True)
r.stop()
os._exit(0)
'''
    rc, out, err = run_python(code, timeout=30)
    assert rc == 0, err
    assert "child exit 0" in out, out + err


async def test_message_size_limit_never_exceeds_the_outbox(make_private_redis, make_publisher,
                                                           manager) -> None:
    """A message larger than the outbox could hold used to be accepted and then dropped at once
    while Redis was down: now the limit follows the outbox, and a contradiction is an error."""
    with pytest.raises(ValueError, match="outbox_max_bytes"):
        make_publisher(manager=manager, max_message_bytes=2_000, outbox_max_bytes=1_000)
    server = make_private_redis(start=False)
    publisher = make_publisher(redis_url=server.url, manager=manager, outbox_max_bytes=1_000,
                               backoff_min=0.02, backoff_max=0.1)
    with pytest.raises(ValueError, match="max_message_bytes"):
        await publisher.publish_progress("1", "x" * 1_001)
    await publisher.publish_progress("1", "x" * 900)  # fits: queued while Redis is down
    assert publisher.stats()["outbox_dropped"] == 0
