"""Medians, ratios, the printed table, the JSON file and the PNG chart of a benchmark run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

IMPLS = ("reference", "native")

# (scenario, result key, label, better, SPEC 5 target on native/reference)
METRICS: list[tuple[str, str, str, str, str]] = [
    ("sequential", "publishes_per_s", "a  awaited sequential publishes/s", "higher", ">= 3x"),
    ("concurrent", "delivered_per_s", "b  500 publishers: delivered msg/s", "higher", ">= 20x"),
    ("concurrent", "lost", "b  500 publishers: lost of N messages", "lower", "0 lost"),
    ("latency", "p50_ms", "c  5k msg/s: p50 publish->send_text ms", "lower", ""),
    ("latency", "p99_ms", "c  5k msg/s: p99 publish->send_text ms", "lower", "<= 0.33x"),
    ("latency", "lost", "c  5k msg/s: lost of N messages", "lower", ""),
    ("latency", "loop_cpu_us_per_msg", "d  loop CPU us/msg (5k/s, publish+deliver)", "lower", "<= 0.2x"),
    ("latency", "wakeups_per_msg", "d  loop wake-ups per msg (5k/s)", "lower", ""),
    ("memory", "loop_cpu_us_per_delivered", "d  loop CPU us/msg (deliver only)", "lower", "<= 0.2x"),
    ("concurrent", "loop_cpu_us_per_delivered", "d  loop CPU us/delivered (500 publishers)", "lower", ""),
    ("idle", "wakeups_per_s", "e  idle: event-loop wake-ups/s", "lower", "no periodic"),
    ("idle", "process_cpu_ms_per_s", "e  idle: process CPU ms/s", "lower", ""),
    ("memory", "rss_mib", "f  RSS MiB after M delivered", "lower", ""),
    ("memory", "rss_growth_mib", "f  RSS growth MiB over M delivered", "lower", "flat"),
    ("memory", "deliver_per_s", "f  deliver-only msg/s", "higher", ""),
]


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return statistics.median(values) if values else None


def summarize(results: dict) -> list[dict]:
    """One row per metric: medians of each implementation and native/reference."""
    rows = []
    for scenario, key, label, better, target in METRICS:
        entry = results["scenarios"].get(scenario)
        if entry is None:
            continue
        params = entry["params"]
        label = label.replace(" M ", f" {params.get('messages', 0):,} ")
        if scenario == "concurrent":
            label = label.replace(" N ", f" {params['publishers'] * params['per_publisher']:,} ")
        elif scenario == "latency":
            label = label.replace(" N ", f" {int(params['rate'] * params['seconds']):,} ")
        medians = {impl: median(entry["runs"].get(impl, []), key) for impl in IMPLS}
        ref, nat = medians["reference"], medians["native"]
        ratio = nat / ref if ref not in (None, 0) and nat is not None else None
        rows.append({
            "scenario": scenario, "key": key, "label": label, "better": better,
            "target": target, "reference": ref, "native": nat, "ratio": ratio,
            "runs": {impl: len(entry["runs"].get(impl, [])) for impl in IMPLS},
        })
    return rows


def ceiling_fractions(results: dict) -> dict[str, Any]:
    """Delivered msg/s of each implementation as a fraction of Redis's PUBLISH ceiling."""
    ceiling = results.get("ceiling", {}).get("median_publish_per_s")
    out: dict[str, Any] = {"ceiling_publish_per_s": ceiling}
    for scenario, key in (("concurrent", "delivered_per_s"), ("memory", "deliver_per_s")):
        entry = results["scenarios"].get(scenario)
        for impl in IMPLS:
            value = median(entry["runs"].get(impl, []), key) if entry else None
            out[f"{impl}_{scenario}"] = value / ceiling if value and ceiling else None
    seq = results.get("ceiling", {}).get("sequential_publish_per_s")
    entry = results["scenarios"].get("sequential")
    out["sequential_publish_per_s"] = seq
    for impl in IMPLS:
        value = median(entry["runs"].get(impl, []), "publishes_per_s") if entry else None
        out[f"{impl}_sequential"] = value / seq if value and seq else None
    return out


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if float(value).is_integer() and magnitude < 1e15:
        return f"{int(value):,}"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3g}x" if ratio < 100 else f"{ratio:,.0f}x"


def print_table(results: dict, rows: list[dict]) -> None:
    """The medians of both implementations, native/reference and the SPEC 5 target."""
    width = max(len(r["label"]) for r in rows) if rows else 40
    head = f"{'metric (median)':<{width}}  {'reference':>11}  {'native':>11}  {'native/ref':>10}  target"
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['label']:<{width}}  {fmt(r['reference']):>11}  {fmt(r['native']):>11}  "
            f"{fmt_ratio(r['ratio']):>10}  {r['target']}"
        )
    ceiling = results.get("ceiling") or {}
    fractions = results.get("ceiling_fractions") or {}
    if ceiling.get("median_publish_per_s"):
        print()
        print(
            f"Redis PUBLISH ceiling (redis-benchmark -P {ceiling['pipeline']}, 1 subscriber, "
            f"median of {len(ceiling['runs'])}): {fmt(ceiling['median_publish_per_s'])} msg/s"
        )
        for impl in IMPLS:
            b, f = fractions.get(f"{impl}_concurrent"), fractions.get(f"{impl}_memory")
            if b is None and f is None:
                continue
            parts = []
            if b is not None:
                parts.append(f"b delivered/s = {100 * b:.1f}%")
            if f is not None:
                parts.append(f"f deliver-only/s = {100 * f:.1f}%")
            target = "   (target b >= 50%)" if impl == "native" else ""
            print(f"  {impl:<9} of ceiling: {', '.join(parts)}{target}")
    wake = results.get("wakeup_cost")
    if wake:
        print(f"One blocking event-loop wake-up on this machine: {wake['cpu_us_per_wakeup']:.1f} us of "
              f"loop-thread CPU (the floor under per-message CPU at low rates)")
    if ceiling.get("sequential_publish_per_s"):
        print(
            f"Round-trip bound of one awaited publisher (redis-benchmark -c 1 -P 1, C, no Python): "
            f"{fmt(ceiling['sequential_publish_per_s'])} msg/s"
        )
        for impl in IMPLS:
            a = fractions.get(f"{impl}_sequential")
            if a is not None:
                print(f"  {impl:<9} a sequential publishes/s = {100 * a:.0f}% of that bound")
    print()


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def _tail(percentile: float) -> float:
    """Plot coordinate that spreads the tail: 1 / (1 - p), capped near p = 100."""
    return 1.0 / max(1.0 - percentile / 100.0, 5e-5)


def _median_run(runs: list[dict], key: str) -> dict | None:
    runs = [r for r in runs if isinstance(r.get(key), (int, float))]
    if not runs:
        return None
    return sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]


def write_png(results: dict, rows: list[dict], path: Path) -> str | None:
    """The chart; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: {exc}"
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: fmt(v))

    def log_axis(axis: Any) -> None:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    colors = {"reference": "#8c8c8c", "native": "#1f77b4"}
    by_key = {(r["scenario"], r["key"]): r for r in rows}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(
        f"vuemantics-pubsub: native vs pure-Python reference (medians; {results['meta']['mode']} run, "
        f"Redis {results['meta'].get('redis_version', '?')}, Python {results['meta']['python']})",
        fontsize=12,
    )

    def bars(ax: Any, items: list[tuple[str, str, str]], title: str, ylabel: str,
             log: bool = False) -> None:
        labels, width = [lab for _, _, lab in items], 0.38
        for j, impl in enumerate(IMPLS):
            values = [(by_key.get((s, k)) or {}).get(impl) for s, k, _ in items]
            xs = [i + (j - 0.5) * width for i in range(len(items))]
            heights = [v if v is not None else 0 for v in values]
            drawn = ax.bar(xs, heights, width, label=impl, color=colors[impl])
            for rect, v in zip(drawn, values):
                ax.annotate(fmt(v), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(items)), labels, fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
            log_axis(ax.yaxis)
        ax.legend(fontsize=8)

    ceiling = (results.get("ceiling") or {}).get("median_publish_per_s")
    ax = axes[0][0]
    bars(ax, [("sequential", "publishes_per_s", "a awaited\nsequential"),
              ("concurrent", "delivered_per_s", "b 500 publishers\ndelivered"),
              ("memory", "deliver_per_s", "f deliver\nonly")],
         "Throughput (msg/s, log)", "messages / s", log=True)
    if ceiling:
        ax.axhline(ceiling, color="#d62728", linestyle="--", linewidth=1)
        ax.annotate(f"redis-benchmark PUBLISH ceiling {fmt(ceiling)}/s", (0.02, ceiling),
                    xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="#d62728")

    ax = axes[0][1]
    lat = results["scenarios"].get("latency")
    if lat:
        for impl in IMPLS:
            run = _median_run(lat["runs"].get(impl, []), "p99_ms")
            if run is None:
                continue
            ys = [_tail(p) for p in run["latency_points"]]
            ax.plot(run["latency_ms"], ys, color=colors[impl], marker=".", markersize=3,
                    label=f"{impl}: p50 {fmt(run['p50_ms'])} ms, p99 {fmt(run['p99_ms'])} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [50, 90, 99, 99.9, 99.99]
        ax.set_yticks([_tail(p) for p in ticks], [f"{p:g}" for p in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
        log_axis(ax.xaxis)
        ax.axhline(_tail(99), color="#d62728", linestyle=":", linewidth=1)
        ax.set_xlabel("publish -> send_text latency, ms (log)")
        ax.set_ylabel("percentile (tail stretched)")
        ax.set_title(f"c  Latency distribution at {lat['params']['rate']:,} msg/s "
                     "(run with median p99)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")

    ax = axes[0][2]
    if lat:
        points = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)]
        width = 0.38
        for j, impl in enumerate(IMPLS):
            run = _median_run(lat["runs"].get(impl, []), "p99_ms")
            if run is None:
                continue
            at = dict(zip(run["latency_points"], run["latency_ms"]))
            values = [at.get(p) for _, p in points]
            xs = [i + (j - 0.5) * width for i in range(len(points))]
            drawn = ax.bar(xs, values, width, label=impl, color=colors[impl])
            for rect, v in zip(drawn, values):
                ax.annotate(fmt(v), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(points)), [n for n, _ in points])
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        ax.set_ylabel("ms (log)")
        ax.set_title("c  Latency percentiles", fontsize=10)
        ax.legend(fontsize=8)

    bars(axes[1][0], [("latency", "loop_cpu_us_per_msg", "c 5k/s\npublish+deliver"),
                      ("memory", "loop_cpu_us_per_delivered", "f deliver\nonly"),
                      ("concurrent", "loop_cpu_us_per_delivered", "b 500\npublishers")],
         "d  Event-loop CPU per message", "microseconds / message", log=True)
    bars(axes[1][1], [("idle", "wakeups_per_s", "loop wake-ups/s"),
                      ("idle", "process_cpu_ms_per_s", "process CPU ms/s")],
         "e  Idle started publisher", "per second")
    mem = results["scenarios"].get("memory")
    ax = axes[1][2]
    top = 0.0
    if mem:
        for impl in IMPLS:
            run = _median_run(mem["runs"].get(impl, []), "rss_mib")
            if run is None:
                continue
            xs = [n for n, _ in run["checkpoints"]]
            ys = [kb / 1024 for _, kb in run["checkpoints"]]
            top = max(top, *ys)
            ax.plot(xs, ys, marker=".", color=colors[impl],
                    label=f"{impl}: {fmt(run['rss_mib'])} MiB at end")
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("messages delivered")
        ax.set_ylabel("RSS, MiB")
        ax.set_ylim(0, top * 1.3 if top else 1)
        ax.set_title("f  Resident memory while delivering", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
