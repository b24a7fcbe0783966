"""`make bench`: every scenario, several runs each, on one real local broker.

    python -m bench.run            # quick mode, a few minutes
    python -m bench.run --full     # longer runs, more load points

Each scenario is a script that prints one JSON line (see bench/common.py). This runs each of
them ``--runs`` times against one broker, and writes ``bench/results/latest.json``, the table
``bench/results/latest.md`` (median, min and max of each figure, each product figure next to
its baseline from the same run) and ``bench/results/latency.png`` (latency percentiles against
offered load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agents.arbitration.quality import scenarios as quality_scenarios
from bench.common import MACHINE_NOTE, ROOT, kafka
from bench.quality import metric as quality_metric

RESULTS = ROOT / "bench" / "results"

# scenario -> (quick arguments, full arguments)
SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    # at ~40k ticks/s fewer ticks than this make the 0.2 s polling of the output a large error
    # (60,000 ticks took 1.5 s: 13 %)
    "arbitration": (["--ticks", "150000"], ["--ticks", "300000"]),
    "latency": (
        ["--rates", "1000,5000,20000", "--duration", "4"],
        ["--rates", "500,1000,2500,5000,7500,10000,20000", "--duration", "20"],
    ),
    "fanout": (["--quick"], []),
    # enough records that the consumers' start-up (about 0.1 s) is not the figure
    "replay": (["--records", "200000", "--rounds", "2"], ["--records", "1000000"]),
    "replay_live": (["--phase", "5", "--rounds", "2"], ["--phase", "15", "--rounds", "3"]),
    "export": (["--records", "300000"], ["--records", "1000000"]),
    "ohlcv": (
        ["--symbols", "10", "--days", "1,7", "--requests", "20"],
        ["--symbols", "50", "--days", "1,7", "--requests", "30"],
    ),
    "startup": ([], []),
    "quality": ([], []),
}

# The 1,000-client fan-out phase spends most of its time opening and closing connections: quick
# mode runs it twice (still a median of several runs) to stay within five minutes; so does the
# candle index's (about a minute a run). Quality is deterministic: one run says it all.
QUICK_RUNS = {"fanout": 2, "quality": 1, "ohlcv": 2}

QUALITY_SCENARIOS = tuple(s.name for s in quality_scenarios())

# (label, product metric, baseline metric, unit): rows of the markdown table.
ROWS: list[tuple[str, str, str | None, str]] = [
    ("Arbitration, one worker", "arbitration_ticks_per_s", "plain_aiokafka_ticks_per_s", "ticks/s"),
    (
        "Arbitration vs naive Faust agent",
        "arbitration_ticks_per_s",
        "naive_faust_ticks_per_s",
        "ticks/s",
    ),
    (
        "Arbitration vs plain forward (bytes)",
        "arbitration_ticks_per_s",
        "plain_forward_ticks_per_s",
        "ticks/s",
    ),
    (
        "Arbitration vs its I/O baseline (same records out, no arbitration)",
        "arbitration_ticks_per_s",
        "arbitration_io_baseline_ticks_per_s",
        "ticks/s",
    ),
    (
        "Arbitration step alone, no Kafka: compiled core vs Python reference",
        "arbitration_step_alone_ticks_per_s",
        "arbitration_step_python_ticks_per_s",
        "ticks/s",
    ),
    ("Output records per raw tick", "arbitration_records_per_tick", None, "records"),
    ("Latency p50 at 5,000 ticks/s", "latency_5000_p50_ms", None, "ms"),
    ("Latency p99 at 5,000 ticks/s", "latency_5000_p99_ms", None, "ms"),
    ("Latency p99.9 at 5,000 ticks/s", "latency_5000_p999_ms", None, "ms"),
    ("Latency p50 at 1,000 ticks/s", "latency_1000_p50_ms", None, "ms"),
    ("Latency p50 at 20,000 ticks/s", "latency_20000_p50_ms", None, "ms"),
    ("Latency p99 at 20,000 ticks/s", "latency_20000_p99_ms", None, "ms"),
    ("Highest load with p99 < 50 ms", "max_rate_p99_under_50ms", None, "ticks/s"),
    ("Fan-out, 100 clients", "fanout_100_updates_per_s", "bare_100_msgs_per_s", "updates/s"),
    ("Fan-out, 1,000 clients", "fanout_1000_updates_per_s", "bare_1000_msgs_per_s", "updates/s"),
    ("Idle connection, deflate off", "idle_kib_per_conn_plain", None, "KiB"),
    ("Idle connection, deflate on", "idle_kib_per_conn_deflate", None, "KiB"),
    (
        "Replay to one client (JSON) vs a bare aiokafka consumer",
        "replay_records_per_s",
        "replay_bare_records_per_s",
        "records/s",
    ),
    (
        "Replay to one client (msgpack frames) vs a bare aiokafka consumer",
        "replay_msgpack_records_per_s",
        "replay_bare_records_per_s",
        "records/s",
    ),
    *[
        (
            f"`fiml replay` to {label} vs a bare aiokafka consumer",
            f"export_{fmt}_records_per_s",
            "export_bare_records_per_s",
            "records/s",
        )
        for fmt, label in (("jsonl", "JSON Lines"), ("csv", "CSV"), ("parquet", "Parquet"))
    ],
    (
        "Client decoding, msgpack vs JSON data messages",
        "decode_msgpack_records_per_s",
        "decode_json_records_per_s",
        "records/s",
    ),
    (
        "Live p99 while 4 replays run vs without",
        "live_p99_ms_replaying",
        "live_p99_ms_quiet",
        "ms",
    ),
    ("Replays' total rate beside live clients", "replays_records_per_s", None, "records/s"),
    ("Replay fairness, slowest / fastest of 4", "replay_fairness_min_over_max", None, ""),
    (
        "GET /ohlcv, a day of 1m candles, 1 day of history: index vs scan",
        "ohlcv_index_1d_ms",
        "ohlcv_scan_1d_ms",
        "ms",
    ),
    (
        "GET /ohlcv, a day of 1m candles, 7 days of history: index vs scan",
        "ohlcv_index_7d_ms",
        "ohlcv_scan_7d_ms",
        "ms",
    ),
    ("Candle index build", "ohlcv_index_build_records_per_s", None, "records/s"),
    ("Candle index per symbol-day, 1m", "ohlcv_index_kib_per_symbol_day", None, "KiB"),
    ("`fiml up` to first price (warm)", "startup_to_first_price_s", None, "s"),
    *[
        (
            f"Consensus error vs the best provider alone, {name}",
            quality_metric(name, "consensus_bps"),
            quality_metric(name, "best_bps"),
            "bp",
        )
        for name in QUALITY_SCENARIOS
    ],
    *[
        (
            f"Consensus error vs the inverse-variance bound, {name}",
            quality_metric(name, "consensus_bps"),
            quality_metric(name, "bound_bps"),
            "bp",
        )
        for name in QUALITY_SCENARIOS
    ],
    ("Band coverage (stated 90 %), demo", quality_metric("demo", "coverage_pct"), None, "%"),
]


def run_once(name: str, args: list[str], env: dict[str, str]) -> dict[str, object] | None:
    command = [sys.executable, "-m", f"bench.{name}", *args]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        print(f"  {name}: failed ({result.returncode}): {' | '.join(tail)}", file=sys.stderr)
        return None
    print(f"  {name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    parsed: dict[str, object] = json.loads(lines[-1])
    return parsed


def summarise(runs: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run["metrics"].items():  # type: ignore[attr-defined]
            values.setdefault(key, []).append(float(value))
    return {
        key: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": len(v)}
        for key, v in values.items()
    }


def fmt(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"

    def num(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"

    return f"{num(stats['median'])} ({num(stats['min'])} to {num(stats['max'])})"


def markdown(summary: dict[str, dict[str, float]], mode: str, runs: int) -> str:
    lines = [
        f"Mode: {mode}, up to {runs} runs per scenario; median (min to max). "
        f"Machine: {MACHINE_NOTE}.",
        "",
        "| figure | FIML Stream | baseline, same run | ratio | unit |",
        "|---|---|---|---|---|",
    ]
    for label, metric, baseline, unit in ROWS:
        ours = summary.get(metric)
        base = summary.get(baseline) if baseline else None
        ratio = f"{ours['median'] / base['median']:.2f}x" if ours and base else ""
        lines.append(
            f"| {label} | {fmt(ours)} | {fmt(base) if baseline else ''} | {ratio} | {unit} |"
        )
    return "\n".join(lines) + "\n"


def plot(latency_runs: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_rate: dict[float, dict[str, list[float]]] = {}
    for run in latency_runs:
        for point in run.get("points", []):  # type: ignore[attr-defined]
            entry = by_rate.setdefault(point["offered_ticks_per_s"], {})
            for key in ("p50_ms", "p99_ms", "p999_ms"):
                entry.setdefault(key, []).append(point[key])
    rates = sorted(by_rate)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        ax.plot(rates, [statistics.median(by_rate[r][key]) for r in rates], marker="o", label=label)
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8, label="50 ms")
    ax.set_xlabel("offered load, raw ticks/s")
    ax.set_ylabel("tick to client, ms")
    ax.set_yscale("log")
    ax.set_title("End-to-end latency (realtime mode, 100 clients)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args()
    mode = "full" if args.full else "quick"
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"FIML Stream benchmarks ({mode}); machine: {MACHINE_NOTE}", file=sys.stderr)
    all_runs: dict[str, list[dict[str, object]]] = {}
    with kafka() as bootstrap:
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PYTHONPATH=str(ROOT))
        for name in chosen:
            quick, full = SCENARIOS[name]
            count = args.runs if args.full else min(args.runs, QUICK_RUNS.get(name, args.runs))
            runs = [run_once(name, full if args.full else quick, env) for _ in range(count)]
            all_runs[name] = [r for r in runs if r is not None]
    summary: dict[str, dict[str, float]] = {}
    for done in all_runs.values():
        summary.update(summarise(done))
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {"mode": mode, "machine": MACHINE_NOTE, "summary": summary, "runs": all_runs}, indent=2
        )
    )
    table = markdown(summary, mode, args.runs)
    (RESULTS / "latest.md").write_text(table)
    if all_runs.get("latency"):
        plot(all_runs["latency"], RESULTS / "latency.png")
    print(table)
    failed = [name for name in chosen if not all_runs.get(name)]
    if failed:
        raise SystemExit(f"scenarios with no successful run: {', '.join(failed)}")


if __name__ == "__main__":
    main()
