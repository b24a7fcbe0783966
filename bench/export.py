"""Export: ``fiml replay`` (topic -> file) against a bare aiokafka consumer, in one run.

    python -m bench.export --records 200000 --symbols 10

PriceUpdate records are written to ``fiml.prices`` (``bench.replay.fill``: 4 partitions,
Kafka timestamps 10 ms apart, ending a minute ago). Then, three rounds, each in turn: the bare
consumer (``bench.common.bare_read``: reads every record and counts it) and the export
(``infra.export.export_range``, as ``fiml replay`` calls it, without the progress bar) of the
whole topic to a new file in a temporary directory as JSON Lines, CSV and Parquet. Each figure
is the best of its rounds, in records per second of wall time from the call to its return
(client start and offset lookups included, for both); each ratio is the export's over the bare
consumer's. The medians are reported beside them (``medians``). Every export must write
exactly the records the bare consumer read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import MACHINE_NOTE, bare_read, fresh_prefix, kafka, report
from bench.replay import fill
from infra.export import FORMATS, Format, export_range, topic_models


async def export_to(bootstrap: str, topic: str, path: Path, fmt: Format) -> int:
    """The whole of ``topic`` to ``path`` as ``fiml replay`` writes it; records written."""
    with path.open("wb") as out:
        models = topic_models("fiml.prices")
        result = await export_range(bootstrap, topic, 0, None, out, fmt, models=models)
    return result.written


def timed(run: Callable[[], Coroutine[Any, Any, int]]) -> tuple[int, float]:
    """``run``'s result and its records per second."""
    t0 = time.perf_counter()
    count = asyncio.run(run())
    return count, count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    symbols = [f"E{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(args.symbols)]
    # all in the past: the broker refuses records stamped more than an hour ahead
    start_ms = int(time.time() * 1000) - args.records * 10 - 60_000
    rates: dict[str, list[float]] = {name: [] for name in ("bare", *FORMATS)}
    sizes: dict[str, int] = {}
    with kafka() as bootstrap, tempfile.TemporaryDirectory(prefix="fiml-export-") as tmp:
        from schemas.topics import TOPICS, topic_name

        fresh_prefix(bootstrap)
        topic = topic_name("fiml.prices")
        asyncio.run(fill(bootstrap, topic, symbols, args.records, start_ms))
        partitions = TOPICS["fiml.prices"].partitions
        for _ in range(args.rounds):
            count, rate = timed(lambda: bare_read(bootstrap, topic, partitions))
            if count != args.records:
                raise SystemExit(f"the bare consumer read {count} records of {args.records}")
            rates["bare"].append(rate)
            for fmt in FORMATS:
                path = Path(tmp) / f"prices.{fmt}"
                # a new file each time: truncating the last one's 100 MB costs the writer
                # (system time) as much as writing it, and varies with the page cache
                path.unlink(missing_ok=True)
                written, rate = timed(partial(export_to, bootstrap, topic, path, fmt))
                if written != args.records:
                    raise SystemExit(f"{fmt} wrote {written} records of {args.records}")
                rates[fmt].append(rate)
                sizes[fmt] = path.stat().st_size
    best = {name: max(values) for name, values in rates.items()}
    metrics = {f"export_{name}_records_per_s": rate for name, rate in best.items()}
    metrics.update({f"export_{fmt}_ratio": best[fmt] / best["bare"] for fmt in FORMATS})
    report(
        "export",
        metrics,
        records=args.records,
        file_bytes=sizes,
        rounds={name: [round(r) for r in values] for name, values in rates.items()},
        medians={name: round(statistics.median(values)) for name, values in rates.items()},
        note=MACHINE_NOTE,
    )


if __name__ == "__main__":
    main()
