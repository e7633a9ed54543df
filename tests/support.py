"""Plain helpers shared by the tests: fake WebSockets, polling, unique ids.

Fixtures live in ``conftest.py``; this module holds what tests import by name.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio


class FakeWebSocket:
    """Stands in for a Starlette WebSocket: records every ``send_text`` payload."""

    def __init__(self, name: str = "ws") -> None:
        self.name = name
        self.sent: list[object] = []

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} sent={len(self.sent)}>"


class FailingWebSocket(FakeWebSocket):
    """A WebSocket whose client has gone: every ``send_text`` raises."""

    def __init__(self, name: str = "dead-ws") -> None:
        super().__init__(name)
        self.attempts = 0

    async def send_text(self, data: str) -> None:
        self.attempts += 1
        raise RuntimeError('Cannot call "send" once a close message has been sent.')


async def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 5.0,
    what: str | Callable[[], str] = "condition",
) -> float:
    """Poll ``predicate`` every 2 ms until it is true; return the seconds waited.

    Fails the test with ``what`` (a string, or a callable evaluated at failure
    time so it can describe the current state) when ``timeout`` passes first.
    """
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.2f} s waiting for {description}")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


async def wait_for_sent(ws: FakeWebSocket, count: int, timeout: float = 5.0) -> None:
    """Wait until ``ws`` has received at least ``count`` messages."""
    await wait_for(
        lambda: len(ws.sent) >= count,
        timeout,
        lambda: f"{ws.name} to receive {count} message(s); it has {len(ws.sent)}: {ws.sent[:5]!r}",
    )


def unique(prefix: str) -> str:
    """A short id unique to this call, so tests sharing one Redis never cross-talk."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_exactly_once_in_order(received: Sequence[object], expected: Sequence[object]) -> None:
    """Assert ``received == expected`` with a short explanation instead of a huge diff."""
    if list(received) == list(expected):
        return
    counts = Counter(received)
    expected_set = set(expected)
    missing = [m for m in expected if m not in counts]
    duplicated = [m for m, n in counts.items() if n > 1]
    unexpected = [m for m in counts if m not in expected_set]
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(received, expected)) if a != b),
        min(len(received), len(expected)),
    )
    raise AssertionError(
        f"received {len(received)} messages, expected {len(expected)}; "
        f"missing {len(missing)} (first {missing[:3]!r}), "
        f"duplicated {len(duplicated)} (first {duplicated[:3]!r}), "
        f"unexpected {len(unexpected)} (first {unexpected[:3]!r}); "
        f"first difference at index {first_diff}: "
        f"got {list(received[first_diff:first_diff + 3])!r}, "
        f"expected {list(expected[first_diff:first_diff + 3])!r}"
    )


async def next_message(pubsub: redis.asyncio.client.PubSub, timeout: float = 5.0) -> dict[str, Any]:
    """The next data message on a raw redis-py subscription, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return message
    raise AssertionError(f"no message on the raw subscription within {timeout} s")


async def connect_user(
    manager: Any, user_id: str, sockets: int = 1, uploads: Sequence[str] = ()
) -> list[FakeWebSocket]:
    """Connect ``sockets`` fake WebSockets for ``user_id`` and subscribe them to ``uploads``."""
    connected = [FakeWebSocket(f"{user_id}#{i}") for i in range(sockets)]
    for ws in connected:
        await manager.connect(user_id, ws)
    for upload_id in uploads:
        await manager.subscribe_upload(user_id, upload_id)
    return connected


class TimedWebSocket(FakeWebSocket):
    """A FakeWebSocket that also records the ``time.monotonic()`` of every send."""

    def __init__(self, name: str = "timed-ws") -> None:
        super().__init__(name)
        self.times: list[float] = []

    async def send_text(self, data: str) -> None:
        self.times.append(time.monotonic())
        self.sent.append(data)


class HangingWebSocket(FakeWebSocket):
    """A WebSocket whose client stopped reading: ``send_text`` never returns."""

    def __init__(self, name: str = "stuck-ws") -> None:
        super().__init__(name)
        self.attempts = 0
        self.cancelled = 0

    async def send_text(self, data: str) -> None:
        self.attempts += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def seqs(sent: Sequence[object], prefix: str) -> list[int]:
    """The integers of every payload ``f"{prefix}{n}"`` in ``sent``, in order (others ignored)."""
    return [int(str(p)[len(prefix):]) for p in sent if str(p).startswith(prefix)]


def run_python(
    code: str, *args: str, timeout: float = 20.0, cwd: Any = None
) -> tuple[int, str, str]:
    """Run ``code`` in a fresh interpreter (same venv) with a hard timeout.

    Returns ``(returncode, stdout, stderr)``. On timeout the whole process group
    (including any forked grandchild) is SIGKILLed and the test fails with the output.
    """
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env["PYTHONFAULTHANDLER"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"subprocess hung (killed after {timeout} s)\n--- stdout\n{out.decode(errors='replace')}"
            f"\n--- stderr\n{err.decode(errors='replace')[-4000:]}"
        ) from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a forked grandchild left behind
        except (ProcessLookupError, PermissionError):
            pass
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# -- subprocess helpers (CLI and two-instance tests) -------------------------------------------


def package_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports the same vuemantics_pubsub as this
    process, without $REDIS_URL unless given in ``extra``."""
    import os
    from pathlib import Path

    import vuemantics_pubsub

    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    parent = str(Path(vuemantics_pubsub.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [parent, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not os.path.exists("/proc")


def die_with_parent() -> None:
    """``preexec_fn`` for test children: SIGTERM them if pytest dies (Linux)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
