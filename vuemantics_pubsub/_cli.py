"""The command line: ``python -m vuemantics_pubsub {watch,demo,bench}`` (main thread).

Errors a user can fix (a bad URL, an unreachable Redis, no redis-server binary) end the
command with one line on stderr and exit status 2; a Ctrl-C ends ``watch`` with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._native import UploadProgressPublisher

__all__ = ["main", "CliError", "open_publisher", "start_connected"]

logger = logging.getLogger("vuemantics_pubsub")

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
_SILENT = logging.CRITICAL + 1


class CliError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


# -- publishers --------------------------------------------------------------------------


def open_publisher(url: str | None, manager: Any, start_timeout: float) -> UploadProgressPublisher:
    """A publisher on ``url`` (None: $REDIS_URL, then the defaults); a bad URL is a CliError."""
    try:
        return UploadProgressPublisher(url, manager=manager, start_timeout=start_timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def start_connected(publisher: UploadProgressPublisher, verbose: bool = False) -> None:
    """Start ``publisher``; if its subscription is not confirmed within its start timeout,
    stop it and raise CliError("cannot reach Redis at ..."). The package's reconnect
    warnings are held back meanwhile so the error is the only line."""
    level = logger.level
    if not verbose:
        logger.setLevel(_SILENT)
    try:
        await publisher.start()
        if not publisher.connected:
            reason = publisher.stats().get("last_error") or ""
            await publisher.stop()
            detail = f" ({reason})" if reason else ""
            raise CliError(f"cannot reach Redis at {publisher.redis_url}{detail}")
    finally:
        logger.setLevel(level)


def route_package_logs(view: Any, verbose: bool) -> logging.Handler:
    """Show the package's log records (warnings, or everything with -v): inside a live
    ``view``, so the screen stays intact; else on stderr, so stdout stays data."""
    from ._cli_view import ViewLogHandler

    handler: logging.Handler
    if view.live:
        handler = ViewLogHandler(view)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)s: %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False
    return handler


def package_env() -> dict[str, str]:
    """The environment for a child ``python -m vuemantics_pubsub`` importing this package."""
    env = dict(os.environ)
    parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [parent, env.get("PYTHONPATH")]))
    return env


# -- watch -------------------------------------------------------------------------------


async def _watch(args: argparse.Namespace) -> int:
    from ._cli_view import TapManager, make_view

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    view = make_view(sys.stdout, on_broken_pipe=stop.set, plain=args.plain)
    publisher = open_publisher(args.redis_url, TapManager(view.feed), args.timeout)
    view.title = f"watching upload:* and user:* on {publisher.redis_url} (Ctrl-C to quit)"
    handler = route_package_logs(view, args.verbose)
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    watching = False
    try:
        await start_connected(publisher, args.verbose)
        watching = True
        if view.live:
            view.refresh()
        else:  # the banner goes to stderr: stdout is one line per message
            print(view.title, file=sys.stderr, flush=True)
        connected = True
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
            if publisher.connected != connected:
                connected = publisher.connected
                view.set_connected(connected)
        return 0
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await publisher.stop()
        view.close()
        logger.removeHandler(handler)
        if watching and not view.live:
            print(f"{view.messages} message(s) received", file=sys.stderr, flush=True)


def cmd_watch(args: argparse.Namespace) -> int:
    return asyncio.run(_watch(args))


# -- demo ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(args)


def cmd_demo_instance(args: argparse.Namespace) -> int:
    from ._demo import run_instance

    return run_instance(args)


# -- bench -----------------------------------------------------------------------------------


def find_bench() -> Path | None:
    """bench/run.py of a source checkout: the current directory's, else the one next to
    this package (editable installs); None in a plain installed package."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        script = root / "bench" / "run.py"
        if script.is_file() and (root / "bench" / "scenarios.py").is_file():
            return script
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    script = find_bench()
    if script is None:
        raise CliError("bench is not available in this install: it needs a source checkout "
                       "(run it from the repository root)")
    passed = [arg for arg in args.extra if arg != "--"]
    command = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + passed
    proc = subprocess.Popen(command, cwd=script.parent.parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the benchmark got the Ctrl-C too and stops on its own
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return EXIT_INTERRUPTED


# -- argument parsing ------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError("must be between 1 and 100000")
    return value


def _prog() -> str:
    if Path(sys.argv[0]).name == "__main__.py":
        return "python -m vuemantics_pubsub"
    return "vuemantics-pubsub"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Native Redis pub/sub -> WebSocket bridge for the vuemantics backend.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{watch,demo,bench}")

    def redis_options(sub: argparse.ArgumentParser, demo: bool) -> None:
        sub.add_argument(
            "--redis-url", metavar="URL",
            help=("Redis to use (default: $REDIS_URL; without either a private redis-server is "
                  "started)" if demo else "Redis to watch (default: $REDIS_URL, else "
                  "config.settings.redis_url, else redis://localhost:6379/0)"))
        sub.add_argument("--timeout", type=_positive, default=2.0, metavar="SECONDS",
                         help="how long to wait for Redis at start-up (default: 2)")
        sub.add_argument("--plain", action="store_true",
                         help="one line per message even on a terminal")
        sub.add_argument("-v", "--verbose", action="store_true", help="show the package's log")

    watch = commands.add_parser(
        "watch", help="show live upload progress received from Redis",
        description="Listen to upload:* and user:* through the native listener and show one "
                    "progress bar per upload (plain lines when stdout is not a terminal).")
    redis_options(watch, demo=False)
    watch.set_defaults(func=cmd_watch)

    demo = commands.add_parser(
        "demo", help="simulate uploads on one instance and watch them arrive on another",
        description="Run two publisher processes on one Redis: instance A simulates uploads "
                    "moving through the backend's stages, instance B renders what it receives; "
                    "then print delivery and latency figures.")
    demo.add_argument("--uploads", type=_count, default=24, metavar="N",
                      help="uploads to simulate (default: 24)")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the simulation")
    redis_options(demo, demo=True)
    demo.set_defaults(func=cmd_demo)

    bench = commands.add_parser(
        "bench", help="run the benchmark against the pure-Python reference (source checkout)",
        description="Run bench/run.py of a source checkout; other arguments (--json PATH, "
                    "--only native, ...) are passed on to it.")
    bench.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    bench.set_defaults(func=cmd_bench)

    instance = commands.add_parser("_demo-instance")  # instance A of the demo (internal)
    instance.add_argument("--run", required=True)
    instance.add_argument("--uploads", type=_count, required=True)
    instance.add_argument("--seed", type=int, default=1)
    instance.add_argument("--timeout", type=_positive, default=2.0)
    instance.set_defaults(func=cmd_demo_instance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vuemantics_pubsub`` and the ``vuemantics-pubsub`` script."""
    for stream in (sys.stdout, sys.stderr):  # a payload never crashes a non-UTF-8 terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":  # only bench passes unknown options on
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
