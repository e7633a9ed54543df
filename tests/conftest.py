"""Fixtures: a private redis-server on a free loopback port, raw Redis clients,
and publishers that are always stopped after the test.

Never a mock, never the system's Redis on 6379.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio

REDIS_SERVER = os.environ.get("VPS_TEST_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RedisServer:
    """A running private redis-server."""

    host: str
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """Runs in the redis-server child before exec: SIGTERM it if pytest is killed (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free port; retry if another process took the port first."""
    log = workdir / "redis.log"
    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--logfile", str(log),
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return proc, port
            time.sleep(0.02)
        _stop(proc)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"redis-server did not start; last log lines:\n{tail}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session, stopped at the end."""
    workdir = tmp_path_factory.mktemp("redis")
    proc, port = _start_redis(workdir)
    try:
        yield RedisServer(host=HOST, port=port, workdir=workdir)
    finally:
        _stop(proc)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A raw synchronous redis-py client (bytes in, bytes out)."""
    client = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest_asyncio.fixture
async def aredis(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A raw asyncio redis-py client (bytes in, bytes out)."""
    client = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def manager() -> Any:
    """A fresh package ConnectionManager."""
    from vuemantics_pubsub import ConnectionManager

    return ConnectionManager()


@pytest_asyncio.fixture
async def make_publisher(redis_server: RedisServer) -> AsyncIterator[Callable[..., Any]]:
    """A factory of publishers on the private Redis; every one is stopped afterwards.

    ``make_publisher(manager=m, **options)``; ``redis_url`` defaults to the fixture server.
    """
    from vuemantics_pubsub import UploadProgressPublisher

    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("redis_url", redis_server.url)
        publisher = UploadProgressPublisher(**kwargs)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        await asyncio.wait_for(publisher.stop(), timeout=5)


@pytest.fixture
def publisher(make_publisher: Callable[..., Any], manager: Any) -> Any:
    """A publisher (not started) routing through the ``manager`` fixture."""
    return make_publisher(manager=manager)


@pytest_asyncio.fixture
async def raw_subscriber(aredis: redis.asyncio.Redis) -> AsyncIterator[Callable[..., Any]]:
    """``await raw_subscriber(*channels)`` -> a redis-py PubSub, subscribed and confirmed."""
    opened: list[redis.asyncio.client.PubSub] = []

    async def subscribe(*channels: str) -> redis.asyncio.client.PubSub:
        pubsub = aredis.pubsub()
        opened.append(pubsub)
        await pubsub.subscribe(*channels)
        confirmed = 0
        deadline = time.monotonic() + 5
        while confirmed < len(channels):
            assert time.monotonic() < deadline, "raw SUBSCRIBE was not confirmed within 5 s"
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1
        return pubsub

    yield subscribe
    for pubsub in opened:
        await pubsub.aclose()


# ---- private redis-server for fault tests -------------------------------------------------
#
# The fault tests kill, freeze and restart Redis; they must never touch the session-wide
# server that every other test shares. Each gets its own on a fixed free loopback port.


def _redis_ready(port: int) -> bool:
    """True once a server on ``port`` answers PING (``-NOAUTH`` also means it is up)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
    except OSError:
        return False


class PrivateRedis:
    """A redis-server owned by one test: killed, frozen and restarted on the same port.

    ``start()`` returns the ``time.monotonic()`` at which the server first answered PING,
    i.e. when it was accepting connections again.
    """

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.host = HOST
        self.port = _free_port()
        self.password = password
        self.workdir = workdir
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def url_with(self, password: str | None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def url(self) -> str:
        """The URL with the right password (if any)."""
        return self.url_with(self.password)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> float:
        """Start redis-server on ``self.port``; return the monotonic time it answered PING."""
        assert not self.running, "the private redis-server is already running"
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            self.frozen = False
            while self.proc.poll() is None and time.monotonic() < deadline:
                if _redis_ready(self.port):
                    return time.monotonic()
                time.sleep(0.002)
            # exited (port briefly unavailable?) or too slow: clean up and retry
            _stop(self.proc)
            self.proc = None
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
        raise RuntimeError(f"private redis-server did not start on port {self.port}:\n{tail}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, sockets reset by the kernel) and reap it."""
        assert self.proc is not None, "the private redis-server is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)
        self.proc = None
        self.frozen = False

    def stop_process(self) -> None:
        """Freeze the server with SIGSTOP: its sockets stay open but nothing answers."""
        assert self.proc is not None, "the private redis-server is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def cont(self) -> None:
        """Thaw a server frozen by :meth:`stop_process`."""
        if self.proc is not None and self.frozen:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def client(self, **kwargs: Any) -> redis.Redis:
        """A raw synchronous client with the right password."""
        kwargs.setdefault("socket_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def close(self) -> None:
        """Thaw and stop the server; never leaves a redis-server behind."""
        if self.proc is None:
            return
        self.cont()
        _stop(self.proc)
        self.proc = None


@pytest.fixture
def make_private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrivateRedis]]:
    """``make_private_redis(start=True, password=None)`` -> a PrivateRedis, closed afterwards.

    Request this (or ``private_redis``) BEFORE ``make_publisher`` in a test's arguments, so the
    publishers are stopped while their Redis still exists.
    """
    made: list[PrivateRedis] = []

    def make(*, start: bool = True, password: str | None = None) -> PrivateRedis:
        server = PrivateRedis(tmp_path_factory.mktemp("private-redis"), password)
        made.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


@pytest.fixture
def private_redis(make_private_redis: Callable[..., PrivateRedis]) -> PrivateRedis:
    """A started private redis-server (no password) for one test."""
    return make_private_redis()
