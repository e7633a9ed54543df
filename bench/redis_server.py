"""A private redis-server for one benchmark run, and Redis's own PUBLISH ceiling on it."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the runner dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class RedisServer:
    """``redis-server`` on a free loopback port, nothing persisted; a context manager."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or shutil.which("redis-server") or REDIS_SERVER
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vps-bench-redis-")
        for attempt in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    self.executable,
                    "--port", str(self.port),
                    "--bind", self.host,
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self._dir.name,
                    "--loglevel", "warning",
                    # a lagging subscriber is never cut off: the reference must be
                    # measured, not disconnected
                    "--client-output-buffer-limit", "pubsub 0 0 0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready(5.0):
                self.version = self.command("INFO", "server").split("redis_version:")[1].split()[0]
                return
            self.stop()
        raise RuntimeError(f"could not start {self.executable}")

    def _wait_ready(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if self.command("PING") == "PONG":
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def command(self, *args: str) -> str:
        """Send one command, return the reply's text (simple, bulk or error)."""
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            s.sendall(b"*%d\r\n" % len(args) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args))
            data = b""
            while not data.endswith(b"\r\n") or (data[:1] == b"$" and data.count(b"\r\n") < 2):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        head, _, rest = data.partition(b"\r\n")
        if head[:1] == b"$":
            return rest[: int(head[1:])].decode()
        return head[1:].decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_dir", None) is not None:
            self._dir.cleanup()
            self._dir = None


class RawSubscriber:
    """One PSUBSCRIBE upload:* client in a thread that reads and counts, nothing else."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$8\r\nupload:*\r\n")
        self.messages = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("subscriber not confirmed")

    def _read(self) -> None:
        tail = b""
        marker = b"$8\r\npmessage\r\n"
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            data = tail + chunk
            if not self._ready.is_set() and b"psubscribe" in data:
                self._ready.set()
            self.messages += data.count(marker)
            tail = data[-(len(marker) - 1):]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)


def publish_ceiling(server: RedisServer, requests: int, payload: str, pipeline: int = 32,
                    clients: int = 50) -> dict:
    """``redis-benchmark`` PUBLISH (``clients`` connections, ``pipeline`` deep) with one
    pattern subscriber attached."""
    bench = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    sub = RawSubscriber(server.host, server.port)
    try:
        out = subprocess.run(
            [bench, "-h", server.host, "-p", str(server.port), "-n", str(requests),
             "-c", str(clients), "-P", str(pipeline), "--csv", "PUBLISH", "upload:bench", payload],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        deadline = time.monotonic() + 10
        while sub.messages < requests and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sub.close()
    line = [ln for ln in out.splitlines() if ln.strip()][-1]
    fields = line.strip().strip('"').rsplit('","', 7)
    return {
        "publish_per_s": float(fields[1]),
        "p50_ms": float(fields[4]),
        "requests": requests,
        "pipeline": pipeline,
        "clients": clients,
        "subscriber_received": sub.messages,
    }


if __name__ == "__main__":
    with RedisServer() as srv:
        print(srv.url, srv.version, os.getpid())
        print(publish_ceiling(srv, 200_000, '{"t":0}'))
