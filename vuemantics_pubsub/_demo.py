"""``python -m vuemantics_pubsub demo``: two backend instances on one Redis (main thread).

This process is instance B: it starts a private redis-server when no URL is given, listens
through its own publisher and renders what arrives. Instance A is a child process
(``_demo-instance``) that simulates uploads moving through the backend's stages and
publishes every stage, as the AI pipeline does. Each payload has the backend's JSON shape
plus a run-wide ``seq``; its ``timestamp`` is the publish time, so B measures loss,
duplicates, order and publish -> delivery latency. Nothing outlives the command: the
child and the server are stopped in ``finally`` blocks, and the child also exits when
its stdin (a pipe from B) closes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import logging
import math
import os
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ._cli import (
    EXIT_INTERRUPTED,
    CliError,
    open_publisher,
    package_env,
    route_package_logs,
    start_connected,
)

__all__ = ["run_demo", "run_instance", "STAGES"]

# the backend's ProcessingStage values in pipeline order, with percent and message
STAGES: tuple[tuple[str, int, str], ...] = (
    ("queued", 0, "Queued for processing"),
    ("extracting_frames", 15, "Extracting key frames"),
    ("vision_analysis", 35, "Describing frames with the vision model"),
    ("description_audit", 55, "Auditing the description"),
    ("embedding_generation", 75, "Generating embeddings"),
    ("indexing", 90, "Indexing for search"),
    ("completed", 100, "Processing complete"),
)
SUBJECTS = ("a dog on a beach", "a city street at night", "a birthday cake", "a mountain lake",
            "two cats on a sofa", "a cyclist in the rain", "a busy market", "a snowy forest")
ERRORS = {  # what goes wrong at each stage
    "extracting_frames": "frame extraction failed: unsupported codec",
    "vision_analysis": "vision model timed out",
    "description_audit": "description rejected by the audit",
    "embedding_generation": "embedding service unavailable",
    "indexing": "index write failed",
}
RESULT_TAG = "DEMO-RESULT "


def _now_iso(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()


def _upload_ids(run: str, count: int) -> list[str]:
    return [f"demo-{run}-{i + 1:02d}" for i in range(count)]


def _user_id(run: str) -> str:
    return f"demo-{run}-user"


# -- instance A: the simulated processing pipeline --------------------------------------------


class _Pipeline:
    """Publishes every stage of ``count`` uploads, staggered, with random stage times."""

    def __init__(self, publisher: Any, run: str, count: int, seed: int) -> None:
        self.publisher = publisher
        self.run = run
        self.count = count
        self.rng = random.Random(seed)
        self.seq = itertools.count()
        self.upload_messages = 0
        self.user_messages = 0
        self.completed = 0
        self.failed = 0
        self.stagger = min(0.15, 4.0 / count)

    async def _send(self, channel: str, target: str, body: dict[str, Any]) -> None:
        body["seq"] = next(self.seq)
        body["timestamp"] = _now_iso(time.time())
        text = json.dumps(body)
        if channel == "upload":
            await self.publisher.publish_progress(target, text)
            self.upload_messages += 1
        else:
            await self.publisher.publish_to_user(target, text)
            self.user_messages += 1

    async def _progress(self, upload_id: str, stage: str, percent: int, message: str,
                        status: str = "processing", error: str | None = None,
                        score: int | None = None) -> None:
        await self._send("upload", upload_id, {
            "action": "upload_progress",
            "payload": {"upload_id": upload_id, "status": status, "stage": stage,
                        "progress_percent": percent, "message": message,
                        "error_message": error, "description_audit_score": score},
        })

    async def _upload(self, index: int, upload_id: str) -> None:
        rng = self.rng
        await asyncio.sleep(index * self.stagger)
        fail_at = rng.randint(1, len(STAGES) - 2) if index % 5 == 2 else None
        score = rng.randint(60, 99)
        for position, (stage, percent, message) in enumerate(STAGES):
            if position == fail_at:
                error = ERRORS.get(stage, "processing failed")
                await self._progress(upload_id, "failed", percent, f"Failed during {stage}",
                                     status="failed", error=error)
                await self._send("upload", upload_id, {
                    "action": "upload_failed", "upload_id": upload_id, "error_message": error})
                self.failed += 1
                return
            status = {"queued": "pending", "completed": "completed"}.get(stage, "processing")
            await self._progress(upload_id, stage, percent, message, status=status,
                                 score=score if position >= 3 else None)
            if stage != "completed":
                await asyncio.sleep(rng.uniform(0.08, 0.3))
        await self._send("upload", upload_id, {
            "action": "upload_completed", "upload_id": upload_id,
            "description": f"A short video of {rng.choice(SUBJECTS)}", "audit_score": score})
        self.completed += 1

    async def run_all(self) -> None:
        user = _user_id(self.run)
        await self._send("user", user, {
            "action": "notification",
            "message": f"instance A (pid {os.getpid()}) started {self.count} uploads"})
        await asyncio.gather(*(self._upload(i, upload_id)
                               for i, upload_id in enumerate(_upload_ids(self.run, self.count))))
        await self._send("user", user, {
            "action": "notification",
            "message": f"instance A finished: {self.completed} completed, {self.failed} failed"})


async def _instance(args: argparse.Namespace) -> int:
    from .manager import ConnectionManager

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def on_stdin() -> None:  # B closed our stdin (or died): stop
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            main.cancel()

    loop.add_reader(0, on_stdin)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    # an instance of the backend: its own (empty) manager, the URL from $REDIS_URL
    publisher = open_publisher(None, ConnectionManager(), args.timeout)
    try:
        await start_connected(publisher)
        pipeline = _Pipeline(publisher, args.run, args.uploads, args.seed)
        await pipeline.run_all()
        await publisher.flush()
        stats = publisher.stats()
        result = {
            "pid": os.getpid(),
            "published": pipeline.upload_messages + pipeline.user_messages,
            "upload_messages": pipeline.upload_messages,
            "user_messages": pipeline.user_messages,
            "completed": pipeline.completed,
            "failed": pipeline.failed,
            "publish_failed": stats.get("publish_failed", 0),
            "outbox_dropped": stats.get("outbox_dropped", 0),
        }
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    finally:
        await publisher.stop()


def run_instance(args: argparse.Namespace) -> int:
    """The ``_demo-instance`` command (instance A)."""
    try:
        return asyncio.run(_instance(args))
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED


# -- instance B: listen, render, measure ---------------------------------------------------------


@dataclass
class _Tally:
    """What instance B received of one demo run."""

    run: str
    received: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    seen: set[int] = field(default_factory=set)
    last_seq: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def accept(self, channel: str, target: str, payload: str) -> bool:
        """Count ``payload`` if it belongs to this run; False for anyone else's traffic."""
        prefix = f"demo-{self.run}-"
        if not target.startswith(prefix):
            return False
        now = time.time()
        self.received += 1
        try:
            data = json.loads(payload)
            seq = data["seq"]
            sent = datetime.datetime.fromisoformat(data["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            return True
        if seq in self.seen:
            self.duplicated += 1
        self.seen.add(seq)
        key = f"{channel}:{target}"
        if seq < self.last_seq.get(key, -1):
            self.out_of_order += 1
        self.last_seq[key] = max(seq, self.last_seq.get(key, -1))
        self.latencies.append(now - sent)
        return True

    @property
    def delivered(self) -> int:
        return len(self.seen)


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (non-empty)."""
    ordered = sorted(values)
    rank = min(max(1, math.ceil(fraction * len(ordered))), len(ordered))
    return ordered[rank - 1]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def _stop_child(child: asyncio.subprocess.Process) -> None:
    if child.stdin is not None and not child.stdin.is_closing():
        child.stdin.close()
    if child.returncode is not None:
        return
    try:
        await asyncio.wait_for(child.wait(), timeout=1.0)
        return
    except TimeoutError:
        pass
    child.terminate()
    try:
        await asyncio.wait_for(child.wait(), timeout=3.0)
    except TimeoutError:
        child.kill()
        await child.wait()


async def _instance_b(args: argparse.Namespace, url: str) -> int:
    from ._cli_view import TapManager, make_view

    loop = asyncio.get_running_loop()
    run = secrets.token_hex(3)
    tally = _Tally(run)
    view = make_view(sys.stdout, plain=args.plain, title=(
        f"vuemantics-pubsub demo {run}: instance A publishes {args.uploads} uploads, "
        f"instance B (pid {os.getpid()}) renders what reaches it through Redis"))

    def sink(channel: str, target: str, payload: str) -> None:
        if tally.accept(channel, target, payload):
            view.feed(channel, target, payload)

    publisher = open_publisher(url, TapManager(sink), args.timeout)
    handler = route_package_logs(view, args.verbose)
    interrupted = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, interrupted.set)
    child: asyncio.subprocess.Process | None = None
    result: dict[str, Any] = {}
    error = ""
    try:
        await start_connected(publisher, args.verbose)
        env = package_env()
        env["REDIS_URL"] = url  # not on the command line: a password would show in ps
        # -P: not the current directory (a source checkout's package has no built
        # extension) but this very package, through PYTHONPATH
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "vuemantics_pubsub", "_demo-instance", "--run", run,
            "--uploads", str(args.uploads), "--seed", str(args.seed),
            "--timeout", str(args.timeout),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )
        view.log(f"instance A started (pid {child.pid})")
        assert child.stdout is not None and child.stderr is not None
        out_task = asyncio.ensure_future(child.stdout.read())
        err_task = asyncio.ensure_future(child.stderr.read())
        exited = asyncio.ensure_future(child.wait())
        stopped = asyncio.ensure_future(interrupted.wait())
        budget = 30.0 + args.uploads * 0.05
        await asyncio.wait({exited, stopped}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if interrupted.is_set():
            view.log("interrupted")
            exited.cancel()
        elif not exited.done():
            exited.cancel()
            error = f"instance A did not finish within {budget:.0f} s"
        else:
            out, err = await out_task, await err_task
            for line in out.decode(errors="replace").splitlines():
                if line.startswith(RESULT_TAG):
                    result = json.loads(line[len(RESULT_TAG):])
            if child.returncode != 0 or not result:
                lines = err.decode(errors="replace").strip().splitlines()
                error = f"instance A failed (exit status {child.returncode})"
                if lines:
                    error += f": {lines[-1]}"
            else:  # what A published and Redis accepted is in flight to B: give it time
                deadline = loop.time() + 3.0
                while tally.delivered < result["published"] and loop.time() < deadline:
                    if interrupted.is_set():
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)  # and let any duplicate show itself
        out_task.cancel()
        err_task.cancel()
    finally:
        if child is not None:
            await _stop_child(child)
        for sig in signals:
            loop.remove_signal_handler(sig)
        await publisher.stop()
        view.close()
        logging.getLogger("vuemantics_pubsub").removeHandler(handler)
    if error:
        raise CliError(error)
    _print_summary(tally, result, child, interrupted.is_set())
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    lost = result["published"] - tally.delivered
    return 0 if lost == 0 and tally.duplicated == 0 and tally.out_of_order == 0 else 1


def _print_summary(tally: _Tally, result: dict[str, Any], child: Any, interrupted: bool) -> None:
    published = result.get("published")
    rows: list[tuple[str, str]] = []
    child_pid = result.get("pid", getattr(child, "pid", "?"))
    rows.append(("instances", f"A: pid {child_pid} published; B: pid {os.getpid()} (this process) "
                              "listened and rendered"))
    if result:
        rows.append(("uploads", f"{result['completed'] + result['failed']}: "
                                f"{result['completed']} completed, {result['failed']} failed"))
        rows.append(("published", f"{published} messages ({result['upload_messages']} on upload "
                                  f"channels, {result['user_messages']} on user channels)"))
    else:
        rows.append(("published", "unknown (instance A was stopped)"))
    rows.append(("delivered", str(tally.delivered)))
    if published is not None:
        rows.append(("lost", str(published - tally.delivered)))
    rows.append(("duplicated", str(tally.duplicated)))
    rows.append(("out of order", str(tally.out_of_order)))
    if tally.latencies:
        rows.append(("latency p50", _ms(_percentile(tally.latencies, 0.50))))
        rows.append(("latency p99", _ms(_percentile(tally.latencies, 0.99))))
    title = f"summary of demo run {tally.run}" + (" (interrupted)" if interrupted else "")
    print(title)
    for name, value in rows:
        print(f"  {name:<14}{value}")
    sys.stdout.flush()


def run_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command."""
    from ._cli_redis import LocalRedis, RedisNotFound

    url = args.redis_url or os.environ.get("REDIS_URL") or None
    local: LocalRedis | None = None
    try:
        if url is None:
            try:
                local = LocalRedis.start()
            except RedisNotFound as exc:
                raise CliError(str(exc)) from None
            except RuntimeError as exc:
                raise CliError(str(exc)) from None
            url = local.url
            print(f"started a private redis-server on 127.0.0.1:{local.port} (pid {local.pid})",
                  flush=True)
        return asyncio.run(_instance_b(args, url))
    finally:
        if local is not None:
            local.stop()
            print(f"stopped the private redis-server (pid {local.pid})", flush=True)
