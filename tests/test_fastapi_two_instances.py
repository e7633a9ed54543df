"""The drop-in, proven in a real app: two uvicorn processes running the FastAPI app of
tests/app (the backend's WebSocket flow, lifespan and message models) share one
redis-server. WebSocket clients (the ``websockets`` library) connect to instance B; HTTP
calls (httpx) to instance A start processing jobs and publish user messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from app.messages import PIPELINE, server_message
from support import die_with_parent, free_port, package_env, unique
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.timeout(60)

TESTS = Path(__file__).resolve().parent
STAGES = [stage.value for stage, _ in PIPELINE]


@dataclass
class Instance:
    """One uvicorn process serving tests/app."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, user_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{user_id}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _spawn(name: str, redis_url: str, workdir: Path) -> Instance:
    """Start instance ``name`` on a free port and wait until its publisher is subscribed."""
    for attempt in range(3):
        port = free_port()
        log = workdir / f"instance-{name}-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(TESTS),
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
                 "--timeout-graceful-shutdown", "3"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                env=package_env(REDIS_URL=redis_url, INSTANCE_NAME=name),
                preexec_fn=die_with_parent,
            )
        instance = Instance(name, port, proc, log)
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=1.0) as client:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    health = client.get(f"{instance.http}/health")
                    if health.status_code == 200 and health.json()["connected"]:
                        return instance
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        instance.kill()
        if "address already in use" not in instance.log_text().lower():
            raise AssertionError(
                f"instance {name} did not become ready:\n{instance.log_text()[-3000:]}")
    raise AssertionError(f"instance {name}: no free port after 3 attempts")


@pytest.fixture(scope="module")
def instances(
    redis_server: Any, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B of the app on one Redis; killed at the end if still running."""
    workdir = tmp_path_factory.mktemp("fastapi")
    started: list[Instance] = []
    try:
        started.append(_spawn("A", redis_server.url, workdir))
        started.append(_spawn("B", redis_server.url, workdir))
        yield started[0], started[1]
    finally:
        for instance in started:
            instance.kill()


# -- helpers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[ClientConnection]:
    """A WebSocket client; closing it never hangs the test."""
    ws = await connect(url, open_timeout=5, close_timeout=1, ping_interval=None)
    try:
        yield ws
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), timeout=2)


async def subscribe(ws: ClientConnection, upload_id: str) -> None:
    await ws.send(json.dumps({"action": "subscribe_upload", "upload_id": upload_id}))


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next message on ``ws``, checked against the backend's message models."""
    text = await asyncio.wait_for(ws.recv(), timeout=timeout)
    server_message.validate_json(text)
    data: dict[str, Any] = json.loads(text)
    return data


async def receive_until(ws: ClientConnection, action: str, limit: int = 50) -> list[dict[str, Any]]:
    """Messages on ``ws`` up to and including the first with ``action``."""
    got: list[dict[str, Any]] = []
    while len(got) < limit:
        got.append(await receive(ws))
        if got[-1]["action"] == action:
            return got
    raise AssertionError(f"no {action!r} within {limit} messages: {got}")


async def assert_silent(ws: ClientConnection, seconds: float = 0.3) -> None:
    """Nothing more arrives on ``ws`` within ``seconds``."""
    try:
        extra = await asyncio.wait_for(ws.recv(), timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected extra message: {extra!r}")


async def state(instance: Instance) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{instance.http}/debug/state")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def wait_state(instance: Instance, predicate: Callable[[dict[str, Any]], bool],
                     what: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll instance's /debug/state until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        current = await state(instance)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(
                f"instance {instance.name}: timed out waiting for {what}; state {current}")
        await asyncio.sleep(0.02)


async def post(instance: Instance, path: str, **kwargs: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(f"{instance.http}{path}", **kwargs)
        assert response.status_code == 202, response.text
        data: dict[str, Any] = response.json()
        return data


def progress_stages(messages: list[dict[str, Any]]) -> list[str]:
    return [m["payload"]["stage"] for m in messages if m["action"] == "upload_progress"]


# -- tests ----------------------------------------------------------------------------------


async def test_job_on_a_streams_every_stage_to_clients_on_b(
    instances: tuple[Instance, Instance],
) -> None:
    """Each subscribed client on B gets every stage of a job run on A, in order, once;
    a failing job's subscriber gets its stages up to the failure; nobody gets the others'."""
    a, b = instances
    alice, bob = unique("alice"), unique("bob")
    upload, failing = unique("upload"), unique("upload")
    async with client(b.ws(alice)) as alice_1, client(b.ws(alice)) as alice_2, \
            client(b.ws(bob)) as bob_1:
        await subscribe(alice_1, upload)
        await subscribe(alice_2, upload)
        await subscribe(bob_1, failing)
        await wait_state(b, lambda s: s["upload_subscribers"].get(upload) == [alice]
                         and s["upload_subscribers"].get(failing) == [bob]
                         and s["user_connections"].get(alice) == 2, "the subscriptions")

        await post(a, f"/uploads/{upload}/process", params={"user_id": alice})
        await post(a, f"/uploads/{failing}/process",
                   params={"user_id": bob, "fail_at": "vision_analysis"})

        for ws in (alice_1, alice_2):
            got = await receive_until(ws, "notification")
            assert progress_stages(got) == STAGES
            assert [m["action"] for m in got] == ["upload_progress"] * len(STAGES) + [
                "upload_completed", "notification"]
            assert {m["payload"]["upload_id"] for m in got[:len(STAGES)]} == {upload}
            percents = [m["payload"]["progress_percent"] for m in got[:len(STAGES)]]
            assert percents == sorted(percents) and percents[-1] == 100
            assert got[-2]["upload_id"] == upload
            assert got[-1]["message"] == f"Upload {upload} is ready"
            await assert_silent(ws)

        got = await receive_until(bob_1, "notification")
        assert progress_stages(got) == ["queued", "extracting_frames", "failed"]
        assert got[2]["payload"]["error_message"] == "vision_analysis failed (simulated)"
        assert [m["action"] for m in got[3:]] == ["upload_failed", "notification"]
        assert got[3]["upload_id"] == failing
        await assert_silent(bob_1)


async def test_user_message_reaches_every_socket_of_the_user_on_both_instances(
    instances: tuple[Instance, Instance],
) -> None:
    a, b = instances
    alice, bob = unique("alice"), unique("bob")
    async with client(b.ws(alice)) as on_b_1, client(b.ws(alice)) as on_b_2, \
            client(a.ws(alice)) as on_a, client(b.ws(bob)) as bob_on_b:
        await wait_state(b, lambda s: s["user_connections"].get(alice) == 2
                         and s["user_connections"].get(bob) == 1, "alice's and bob's sockets")
        await wait_state(a, lambda s: s["user_connections"].get(alice) == 1, "alice's socket")

        await post(a, f"/users/{alice}/messages", json={"message": "hello from A"})
        await post(b, f"/users/{alice}/messages", json={"message": "hello from B"})
        for ws in (on_b_1, on_b_2, on_a):
            first, second = await receive(ws), await receive(ws)
            assert (first["action"], first["message"]) == ("notification", "hello from A")
            assert (second["action"], second["message"]) == ("notification", "hello from B")
        await assert_silent(bob_on_b)
        for ws in (on_b_1, on_b_2, on_a):
            await assert_silent(ws, 0.1)


async def test_client_that_drops_abruptly_is_cleaned_up_by_b(
    instances: tuple[Instance, Instance],
) -> None:
    """A client that vanishes without a close frame, in the middle of a job, is removed
    from B's manager; the user's other socket still gets every stage."""
    a, b = instances
    alice = unique("alice")
    upload = unique("upload")
    async with client(b.ws(alice)) as stays, client(b.ws(alice)) as drops:
        await subscribe(stays, upload)
        await subscribe(drops, upload)
        await wait_state(b, lambda s: s["upload_subscribers"].get(upload) == [alice]
                         and s["user_connections"].get(alice) == 2, "both sockets subscribed")

        await post(a, f"/uploads/{upload}/process", params={"user_id": alice, "delay": "0.1"})
        got = [await receive(stays), await receive(drops)]
        drops.transport.abort()  # TCP reset, no close frame
        await wait_state(b, lambda s: s["user_connections"].get(alice) == 1,
                         "the dropped socket to be disconnected")

        got = [got[0]] + await receive_until(stays, "notification")
        assert progress_stages(got) == STAGES
        assert [m["action"] for m in got[-2:]] == ["upload_completed", "notification"]

    after = await wait_state(b, lambda s: alice not in s["user_connections"]
                             and upload not in s["upload_subscribers"],
                             "alice's last socket and subscription to be gone")
    assert after["publisher"]["connected"] is True


async def test_both_instances_shut_down_cleanly(instances: tuple[Instance, Instance]) -> None:
    """SIGINT (A) and SIGTERM (B) with clients still connected: the lifespan stops the
    publisher, the clients are closed, the processes exit within a few seconds."""
    a, b = instances
    alice = unique("alice")
    async with client(a.ws(alice)) as on_a, client(b.ws(alice)) as on_b:
        await wait_state(b, lambda s: s["user_connections"].get(alice) == 1, "alice on B")
        await wait_state(a, lambda s: s["user_connections"].get(alice) == 1, "alice on A")
        a.proc.send_signal(signal.SIGINT)
        b.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        for instance in (a, b):
            try:
                await asyncio.to_thread(instance.proc.wait, 10)
            except subprocess.TimeoutExpired:
                instance.kill()
                raise AssertionError(f"instance {instance.name} did not exit within 10 s:\n"
                                     f"{instance.log_text()[-3000:]}") from None
        elapsed = time.monotonic() - started
        for ws in (on_a, on_b):
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), timeout=2)

    assert elapsed < 6, f"shutdown took {elapsed:.1f} s"
    # uvicorn exits 0 after SIGINT; after SIGTERM it shuts down gracefully and then
    # re-raises the signal (its documented behaviour), so the status is -SIGTERM
    assert a.proc.returncode == 0, a.log_text()[-3000:]
    assert b.proc.returncode in (0, -signal.SIGTERM), b.log_text()[-3000:]
    for instance in (a, b):
        log = instance.log_text()
        assert "UploadProgressPublisher stopped" in log, log[-3000:]
        assert "Application shutdown complete" in log, log[-3000:]
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
