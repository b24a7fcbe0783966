"""A seeded generator of raw ticks with a known true price, for tests and the benchmark.

Not a provider (ingestion's simulator is): it builds ``RawTick`` records directly, so the
arbitration can be measured against the truth without any other part running.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from schemas.records import AssetType, RawTick

__all__ = ["ProviderModel", "synthetic_ticks", "truth_at"]


@dataclass(frozen=True, slots=True)
class ProviderModel:
    name: str
    noise_bps: float = 5.0  # standard deviation of the quote around the truth
    lag_ms: int = 0  # the quote shows the truth of lag_ms ago
    every_ms: int = 1_000
    bad_print_rate: float = 0.0  # probability that a quote is off by 2-5 %
    dark_from_ms: int | None = None  # offset from the start at which it goes silent...
    dark_until_ms: int | None = None  # ... and comes back


def synthetic_ticks(
    symbols: list[str],
    providers: list[ProviderModel],
    start_ms: int,
    duration_ms: int,
    seed: int = 7,
) -> tuple[list[RawTick], dict[str, list[tuple[int, float]]]]:
    """Ticks of every provider for every symbol in event-time order, and the truth path
    (symbol -> [(time, price)] every 100 ms)."""
    rng = random.Random(seed)
    truth: dict[str, list[tuple[int, float]]] = {}
    for i, symbol in enumerate(symbols):
        price, path = 100.0 * (i + 1), []
        for t in range(start_ms, start_ms + duration_ms, 100):
            price *= 1 + rng.gauss(0, 2e-4)
            path.append((t, price))
        truth[symbol] = path
    ticks: list[RawTick] = []
    seq = 0
    for p in providers:
        for symbol in symbols:
            path = truth[symbol]
            for t in range(
                start_ms + rng.randrange(p.every_ms), start_ms + duration_ms, p.every_ms
            ):
                off = t - start_ms
                dark_until = p.dark_until_ms if p.dark_until_ms is not None else 1 << 60
                if p.dark_from_ms is not None and p.dark_from_ms <= off < dark_until:
                    continue
                true = path[max(0, (off - p.lag_ms) // 100)][1]
                px = true * (1 + rng.gauss(0, p.noise_bps / 1e4))
                if rng.random() < p.bad_print_rate:
                    px *= 1 + rng.choice((-1, 1)) * rng.uniform(0.02, 0.05)
                half = px * 2e-4
                seq += 1
                ticks.append(
                    RawTick(
                        provider=p.name,
                        symbol=symbol,
                        provider_symbol=symbol.replace("/", ""),
                        asset_type=AssetType.CRYPTO,
                        price=px,
                        bid=px - half,
                        ask=px + half,
                        event_time_ms=t,
                        ingest_time_ms=t,
                        seq=seq,
                    )
                )
    ticks.sort(key=lambda r: (r.event_time_ms, r.provider, r.symbol))
    return ticks, truth


def truth_at(path: list[tuple[int, float]], start_ms: int, t: int) -> float:
    return path[min(max((t - start_ms) // 100, 0), len(path) - 1)][1]
