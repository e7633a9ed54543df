"""Side-by-side benchmark: the native publisher against the pure-Python reference.

    python bench/run.py [--quick] [--json PATH] [--png PATH] [--only reference|native]

Starts a private redis-server on a free loopback port, measures Redis's own PUBLISH
ceiling with redis-benchmark, then runs every scenario of bench/scenarios.py for the
reference and the native publisher alternately, each run in a fresh process, and prints
the medians with native/reference. Results go to a JSON file and a PNG chart. Nothing is
asserted: the numbers are for reading (CI runs --quick as a smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
from redis_server import RedisServer, _die_with_parent, publish_ceiling  # noqa: E402
from scenarios import PAYLOAD  # noqa: E402


@dataclass
class Scenario:
    name: str
    full: dict[str, Any]
    quick: dict[str, Any]
    headline: str  # the result key printed after each run
    parallel: bool = False  # both implementations at once (idle: they share no work)
    repeats: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


PLAN = [
    Scenario("sequential", {"seconds": 1.0}, {"seconds": 0.3}, "publishes_per_s"),
    Scenario("concurrent", {"publishers": 500, "per_publisher": 100, "stall": 1.0},
             {"publishers": 500, "per_publisher": 4, "stall": 0.5}, "delivered_per_s"),
    Scenario("latency", {"rate": 5000, "seconds": 3.0, "warmup": 0.3, "uploads": 100},
             {"rate": 5000, "seconds": 1.0, "warmup": 0.2, "uploads": 100}, "p99_ms"),
    Scenario("idle", {"seconds": 5.0, "settle": 1.5}, {"seconds": 1.0, "settle": 1.5},
             "wakeups_per_s", parallel=True),
    # warm-up = two chunks, so growth is measured after the allocators reached the high-water
    # mark of a 50k-message burst (a burst sits in the listener queue before it is drained)
    Scenario("memory", {"messages": 1_000_000, "chunk": 50_000, "warmup": 100_000},
             {"messages": 20_000, "chunk": 5_000, "warmup": 2_000}, "rss_mib"),
]

RUN_TIMEOUT = 300.0


class RunFailed(Exception):
    pass


def scenario_command(impl: str, name: str, url: str, params: dict) -> list[str]:
    return [sys.executable, str(BENCH / "scenarios.py"), impl, name,
            "--url", url, "--params", json.dumps(params)]


def parse_result(impl: str, name: str, proc: subprocess.CompletedProcess[str]) -> dict:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = "\n    ".join((proc.stderr or "").strip().splitlines()[-8:])
    raise RunFailed(f"{impl} {name}: exit code {proc.returncode}, no result\n    {tail}")


def run_one(impl: str, name: str, url: str, params: dict) -> dict:
    try:
        proc = subprocess.run(scenario_command(impl, name, url, params), capture_output=True,
                              text=True, timeout=RUN_TIMEOUT, preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{impl} {name}: no result within {RUN_TIMEOUT:.0f} s") from None
    return parse_result(impl, name, proc)


def run_parallel(impls: list[str], name: str, url: str, params: dict) -> dict[str, Any]:
    """Start one process per implementation at once; a result or a RunFailed for each."""
    procs = {impl: subprocess.Popen(scenario_command(impl, name, url, params),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=_die_with_parent) for impl in impls}
    out: dict[str, Any] = {}
    try:
        for impl, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                out[impl] = RunFailed(f"{impl} {name}: no result within {RUN_TIMEOUT:.0f} s")
                continue
            done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
            try:
                out[impl] = parse_result(impl, name, done)
            except RunFailed as exc:
                out[impl] = exc
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def native_importable() -> tuple[bool, str]:
    """Whether the scenario processes can import the extension; its path or the error."""
    code = ("import vuemantics_pubsub, vuemantics_pubsub._native as n; "
            "print(getattr(n, '__file__', '?'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(BENCH), timeout=60)
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    lines = proc.stderr.strip().splitlines()
    return False, lines[-1] if lines else f"exit code {proc.returncode}"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("redis", "hiredis", "pydantic", "matplotlib", "vuemantics-pubsub"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def headline(result: dict, key: str) -> str:
    value = result.get(key)
    text = f"{key}={report.fmt(value) if isinstance(value, (int, float)) else value}"
    if "lost" in result and key != "lost":
        text += f" lost={result['lost']}"
    return text


def measure_ceiling(server: RedisServer, quick: bool) -> dict:
    requests, repeats = (100_000, 1) if quick else (500_000, 3)
    runs = []
    for _ in range(repeats):
        runs.append(publish_ceiling(server, requests, PAYLOAD, pipeline=32))
    ceiling = {
        "runs": runs,
        "pipeline": 32,
        "median_publish_per_s": report.median(runs, "publish_per_s"),
        "command": f"redis-benchmark -p PORT -n {requests} -P 32 --csv PUBLISH upload:bench "
                   f"<{len(PAYLOAD)}-byte payload>, one PSUBSCRIBE upload:* reader attached",
    }
    print(f"  ceiling   redis-benchmark PUBLISH: {report.fmt(ceiling['median_publish_per_s'])} msg/s"
          f" (subscriber got {runs[-1]['subscriber_received']:,} of {requests:,})", flush=True)
    # The bound of scenario a: one client waiting for each reply before the next command,
    # in C, with no Python at all. No awaited sequential publisher can beat Redis's round trip.
    seq_requests = 5_000 if quick else 30_000
    seq_runs = [publish_ceiling(server, seq_requests, PAYLOAD, pipeline=1, clients=1)
                for _ in range(repeats)]
    ceiling["sequential_runs"] = seq_runs
    ceiling["sequential_publish_per_s"] = report.median(seq_runs, "publish_per_s")
    ceiling["sequential_command"] = (f"redis-benchmark -p PORT -n {seq_requests} -c 1 -P 1 --csv "
                                     f"PUBLISH upload:bench <{len(PAYLOAD)}-byte payload>")
    print(f"  ceiling   redis-benchmark PUBLISH, 1 client, no pipelining (round-trip bound): "
          f"{report.fmt(ceiling['sequential_publish_per_s'])} msg/s", flush=True)
    return ceiling


def measure_wakeup_cost(quick: bool) -> dict:
    """Event-loop thread CPU of one blocking wake-up on this machine (await asyncio.sleep(1 ms)
    in an otherwise idle loop): the floor under any per-message CPU figure at low rates."""
    n = 300 if quick else 2000

    async def sleeper() -> tuple[float, float]:
        await asyncio.sleep(0.01)
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(n):
            await asyncio.sleep(0.001)
        return time.thread_time() - c0, time.perf_counter() - t0

    cpu, wall = asyncio.run(sleeper())
    out = {"cpu_us_per_wakeup": cpu / n * 1e6, "wall_us_per_wakeup": wall / n * 1e6, "wakeups": n}
    print(f"  platform  one blocking event-loop wake-up costs {out['cpu_us_per_wakeup']:.1f} us of "
          f"loop-thread CPU (asyncio.sleep(0.001) x {n})", flush=True)
    return out


def run_all(args: argparse.Namespace, impls: list[str], server: RedisServer,
            results: dict) -> None:
    results["wakeup_cost"] = measure_wakeup_cost(args.quick)
    results["ceiling"] = measure_ceiling(server, args.quick)
    for sc in PLAN:
        params = dict(sc.quick if args.quick else sc.full)
        if sc.name == "memory":
            params.update(host=server.host, port=server.port)
        repeats = 1 if args.quick else (args.repeats or sc.repeats)
        entry = {"params": params, "repeats": repeats,
                 "runs": {impl: [] for impl in impls}, "errors": []}
        results["scenarios"][sc.name] = entry
        for rep in range(repeats):
            # alternate which implementation goes first
            order = impls if rep % 2 == 0 else list(reversed(impls))
            took: dict[str, float] = {}
            if sc.parallel:
                outcomes = run_parallel(order, sc.name, server.url, params)
            else:
                outcomes = {}
                for impl in order:
                    t0 = time.monotonic()
                    try:
                        outcomes[impl] = run_one(impl, sc.name, server.url, params)
                    except RunFailed as exc:
                        outcomes[impl] = exc
                    took[impl] = time.monotonic() - t0
            for impl in order:
                outcome = outcomes[impl]
                if isinstance(outcome, Exception):
                    entry["errors"].append(str(outcome))
                    print(f"  {sc.name:<10} {impl:<9} #{rep + 1}  FAILED: {outcome}", flush=True)
                    continue
                entry["runs"][impl].append(outcome)
                print(f"  {sc.name:<10} {impl:<9} #{rep + 1}  {headline(outcome, sc.headline)}"
                      + (f"  ({took[impl]:.1f} s)" if impl in took else ""), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="native vs reference publisher benchmark")
    parser.add_argument("--quick", action="store_true",
                        help="one short run of each scenario (a smoke test, seconds)")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--png", type=Path, default=BENCH / "results" / "latest.png")
    parser.add_argument("--only", choices=["reference", "native"])
    parser.add_argument("--repeats", type=int, default=0, help="runs per scenario (default 3)")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C, so redis-server and the runs are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    native_ok, native_where = False, ""
    if args.only != "reference":
        native_ok, native_where = native_importable()
        if not native_ok:
            print(f"error: the native extension is not importable from {sys.executable}: "
                  f"{native_where}\n(install the package, e.g. pip install ., "
                  "or run with --only reference)", file=sys.stderr)
            return 2
    impls = [args.only] if args.only else ["reference", "native"]

    started = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
            "implementations": impls,
            "native": native_where if native_ok else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "packages": package_versions(),
            "git_commit": git_commit(),
            "payload_bytes": len(PAYLOAD),
        },
        "scenarios": {},
    }
    with RedisServer() as server:
        results["meta"]["redis_version"] = server.version
        print(f"redis-server {server.version} on {server.url}; "
              f"implementations: {', '.join(impls)}; {results['meta']['mode']} run", flush=True)
        run_all(args, impls, server, results)
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)

    rows = report.summarize(results)
    results["summary"] = rows
    results["ceiling_fractions"] = report.ceiling_fractions(results)
    report.print_table(results, rows)
    report.write_json(results, args.json)
    print(f"JSON: {args.json}")
    why_not = report.write_png(results, rows, args.png)
    print(why_not or f"PNG:  {args.png}")
    print(f"took {results['meta']['seconds']} s")
    failures = sum(len(e["errors"]) for e in results["scenarios"].values())
    if failures:
        print(f"{failures} run(s) failed; see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
