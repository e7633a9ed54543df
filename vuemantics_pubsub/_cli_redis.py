"""A private redis-server on a free loopback port, for the demo (main thread only).

Start it before any publisher thread exists: the child is set up with a pre-exec hook
(it dies with this process on Linux) and its own session (a Ctrl-C in the terminal
reaches only this process, which then stops it).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisNotFound", "LocalRedis", "find_redis_server"]

HOST = "127.0.0.1"
INSTALL_HINT = "redis-server not found; install it (Debian/Ubuntu: apt-get install redis-server)"
_PR_SET_PDEATHSIG = 1


class RedisNotFound(RuntimeError):
    """No redis-server binary on PATH."""


def find_redis_server() -> str:
    """The redis-server binary on PATH; raises :class:`RedisNotFound` with an install hint."""
    found = shutil.which("redis-server")
    if found is None:
        raise RedisNotFound(INSTALL_HINT)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when this process dies (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class LocalRedis:
    """A running private redis-server; :meth:`stop` it (idempotent)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int,
                 workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.proc = proc
        self.port = port
        self._workdir = workdir

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @classmethod
    def start(cls, timeout: float = 10.0) -> LocalRedis:
        """Start redis-server on a free loopback port, retrying when the port is taken."""
        binary = find_redis_server()
        workdir = tempfile.TemporaryDirectory(prefix="vuemantics-pubsub-redis-")
        log = Path(workdir.name) / "redis.log"
        try:
            for _ in range(5):
                port = _free_port()
                proc = subprocess.Popen(
                    [binary, "--port", str(port), "--bind", HOST, "--save", "",
                     "--appendonly", "no", "--dir", workdir.name, "--logfile", str(log),
                     "--daemonize", "no"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent, start_new_session=True,
                )
                ready = False
                try:
                    deadline = time.monotonic() + timeout
                    while not ready and proc.poll() is None and time.monotonic() < deadline:
                        ready = _answers_ping(port)
                        if not ready:
                            time.sleep(0.02)
                finally:
                    if not ready:  # also on Ctrl-C: never leave it behind
                        _terminate(proc)
                if ready:
                    return cls(proc, port, workdir)
            tail = log.read_text(errors="replace")[-500:].strip() if log.exists() else ""
            last = tail.splitlines()[-1] if tail else "no log"
            raise RuntimeError(f"redis-server did not start: {last}")
        except BaseException:
            workdir.cleanup()
            raise

    def stop(self) -> None:
        """Stop the server and remove its directory; waits at most a few seconds."""
        _terminate(self.proc)
        self._workdir.cleanup()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)
