"""The command line, run as a user runs it: ``python -m vuemantics_pubsub`` in a subprocess
(the demo under a pseudo-terminal, watch with a pipe), asserting what is printed, the exit
status, and that nothing is left running."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from app.messages import (
    Notification,
    ProcessingStage,
    ProcessingStatus,
    UploadCompleted,
    UploadFailed,
    UploadProgressPayload,
    UploadProgressUpdate,
)
from support import free_port, package_env, pid_alive, port_is_open, unique

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "vuemantics_pubsub"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TIME = r"\d\d:\d\d:\d\d\.\d{3}"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), env=env or package_env(), cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_in_terminal(args: list[str], env: dict[str, str], cwd: Path,
                    timeout: float) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as stdin/stdout/stderr; (status, output)."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            start_new_session=True)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    chunk = b""
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        else:
            tail = output.decode(errors="replace")[-3000:]
            raise AssertionError(f"{args} did not finish within {timeout} s:\n{tail}")
        return proc.wait(timeout=5), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        os.close(master)


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def summary_value(output: str, name: str) -> str:
    match = re.search(rf"^\s+{name}\s+(.+?)\s*$", output, re.M)
    assert match, f"no {name!r} line in the summary:\n{output[-2000:]}"
    return match.group(1)


# -- demo -----------------------------------------------------------------------------------


def test_demo_in_a_terminal_delivers_everything_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = package_env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    status, raw = run_in_terminal(CLI + ["demo", "--uploads", "4"], env, tmp_path, timeout=40)
    output = ANSI.sub("", raw).replace("\r", "")
    assert status == 0, output[-3000:]

    # the live view was drawn: cursor movements, progress bars, finished and failed marks
    assert "\x1b[?25l" in raw and "\x1b[?25h" in raw
    assert "█" in output and "✔" in output and "✖" in output
    assert summary_value(output, "uploads") == "4: 3 completed, 1 failed"
    published = int(summary_value(output, "published").split()[0])
    # 3 uploads * (7 stages + completed), the failing one >= 4, 2 user messages
    assert published >= 3 * 8 + 4 + 2
    assert summary_value(output, "delivered") == str(published)
    assert summary_value(output, "lost") == "0"
    assert summary_value(output, "duplicated") == "0"
    assert summary_value(output, "out of order") == "0"
    assert re.fullmatch(r"\d+\.\d\d ms", summary_value(output, "latency p99"))

    server = re.search(
        r"started a private redis-server on 127\.0\.0\.1:(\d+) \(pid (\d+)\)", output)
    instance_a = re.search(r"instance A started \(pid (\d+)\)", output)
    assert server and instance_a, output[-3000:]
    port, redis_pid = int(server.group(1)), int(server.group(2))
    assert f"stopped the private redis-server (pid {redis_pid})" in output
    assert not pid_alive(redis_pid), "the demo's redis-server is still running"
    assert not pid_alive(int(instance_a.group(1))), "the demo's instance A is still running"
    assert not port_is_open(port)
    assert processes_mentioning(f"--port {port}") == []


def test_demo_on_a_given_redis_prints_plain_lines(redis_server: Any, tmp_path: Path) -> None:
    result = run_cli("demo", "--uploads", "3", env=package_env(REDIS_URL=redis_server.url),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "private redis-server" not in result.stdout
    assert "\x1b[" not in result.stdout
    for upload in ("01", "02", "03"):
        assert re.search(rf"^{TIME} upload demo-\w+-{upload} queued +0% Queued for processing$",
                         result.stdout, re.M), result.stdout
    assert re.search(rf"^{TIME} upload demo-\w+-03 FAILED error=", result.stdout, re.M)
    assert summary_value(result.stdout, "lost") == "0"


def test_demo_without_redis_server_binary_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli("demo", env=package_env(PATH=str(empty)), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m vuemantics_pubsub: error: redis-server not found; install it "
        "(Debian/Ubuntu: apt-get install redis-server)"]
    assert result.stdout == ""


# -- watch ----------------------------------------------------------------------------------


def _progress(upload: str, stage: ProcessingStage, percent: int,
              message: str) -> UploadProgressUpdate:
    return UploadProgressUpdate(payload=UploadProgressPayload(
        upload_id=upload, status=ProcessingStatus.PROCESSING, stage=stage,
        progress_percent=percent, message=message))


async def _read_line(stream: asyncio.StreamReader, timeout: float) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout=timeout)
    if not line:
        raise AssertionError("the watcher closed its output")
    return line.decode().rstrip("\n")


async def test_watch_renders_each_message_as_a_plain_line(redis_server: Any, make_publisher: Any,
                                                          tmp_path: Path) -> None:
    from vuemantics_pubsub import ConnectionManager

    done, failed, user = unique("upload"), unique("upload"), unique("alice")
    watcher = await asyncio.create_subprocess_exec(
        *CLI, "watch", "--redis-url", redis_server.url, stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=package_env(), cwd=tmp_path)
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        banner = await _read_line(watcher.stderr, timeout=10)
        assert banner == f"watching upload:* and user:* on {redis_server.url} (Ctrl-C to quit)"

        publisher = make_publisher(manager=ConnectionManager())
        await publisher.publish_progress(done, _progress(done, ProcessingStage.QUEUED, 0, "Queued"))
        await publisher.publish_progress(done, _progress(done, ProcessingStage.VISION_ANALYSIS, 35,
                                                         "Describing frames"))
        await publisher.publish_progress(done, UploadCompleted(upload_id=done, description="A cat",
                                                               audit_score=91))
        await publisher.publish_progress(failed, UploadFailed(upload_id=failed,
                                                              error_message="codec"))
        await publisher.publish_progress(failed, "not JSON \x1b[31m at all")
        await publisher.publish_to_user(user, Notification(message="All done"))
        await publisher.publish_to_user(user, "[1, 2]")
        await publisher.publish_progress(done, '{"action": "upload_progress", "payload": '
                                               '{"stage": 7, "progress_percent": 1e999}}')

        lines = [await _read_line(watcher.stdout, timeout=10) for _ in range(8)]
        expected = [
            f"upload {done} queued   0% Queued",
            f"upload {done} vision_analysis  35% Describing frames",
            f'upload {done} COMPLETED audit_score=91 description="A cat"',
            f'upload {failed} FAILED error="codec"',
            f"upload {failed} raw: not JSON \\x1b[31m at all",
            f"user {user} notification: All done",
            f"user {user} [1, 2]",
            f"upload {done} 7   ?%",
        ]
        for line, want in zip(lines, expected, strict=True):
            assert re.fullmatch(rf"{TIME} {re.escape(want)}", line), (line, want)

        watcher.send_signal(signal.SIGINT)
        status = await asyncio.wait_for(watcher.wait(), timeout=5)
        rest = (await watcher.stderr.read()).decode()
        assert status == 0, rest
        assert rest.strip().splitlines()[-1] == "8 message(s) received"
        assert "Traceback" not in rest
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()


def test_watch_with_a_bad_url_fails_in_one_line_without_the_password(tmp_path: Path) -> None:
    result = run_cli("watch", "--redis-url", "redis://app:hunter2@localhost:notaport/0",
                     cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m vuemantics_pubsub: error: invalid Redis URL 'redis://app:***@")
    assert "hunter2" not in result.stderr + result.stdout

    tls = run_cli("demo", "--redis-url", "rediss://localhost:6380/0", cwd=tmp_path)
    assert tls.returncode == 2
    assert "TLS (rediss://) is not supported" in tls.stderr


def test_watch_with_unreachable_redis_fails_in_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    started = time.monotonic()
    result = run_cli("watch", "--redis-url", f"redis://:hunter2@127.0.0.1:{port}/0",
                     "--timeout", "0.5", cwd=tmp_path)
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"python -m vuemantics_pubsub: error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
    assert "hunter2" not in result.stderr + result.stdout


# -- the rest -------------------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "{watch,demo,bench}" in result.stdout
    assert "_demo-instance" not in result.stdout


def test_bench_outside_a_checkout_says_it_is_not_available(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    from vuemantics_pubsub import _cli

    monkeypatch.chdir(tmp_path)
    if _cli.find_bench() is not None:
        pytest.skip("this install is a source checkout (editable): bench/ is available")
    result = run_cli("bench", "--quick", cwd=tmp_path)
    assert result.returncode == 2
    assert "bench is not available in this install" in result.stderr


@pytest.mark.parametrize("payload", [
    "", "null", "[1]", '"text"', "{}", "[" * 100_000, '{"action": 5}',
    '{"action": "upload_progress", "payload": {"progress_percent": 1e999}}',
    '{"action": "upload_progress", "payload": {"progress_percent": NaN, "stage": null}}',
    '{"action": "upload_progress", "payload": [1, 2]}',
    '{"action": "upload_completed", "audit_score": {"nested": [1]}, "description": 3}',
    '{"action": "upload_failed", "error_message": null}',
    '{"action": "notification", "message": "\\u001b[2J\\u0007 bell"}',
])
def test_watch_renders_any_payload_on_one_clean_line(payload: str) -> None:
    """Whatever a publisher sends, the views render it as one printable line."""
    from vuemantics_pubsub._cli_view import parse

    for channel in ("upload", "user"):
        line = parse(channel, "x", payload).describe()
        assert line.isprintable(), repr(line)
        assert len(line) <= 400
