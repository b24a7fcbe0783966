"""A seeded generator of raw ticks with a known true price, for tests and the benchmark.

Not a provider (ingestion's simulator is): it builds ``RawTick`` records directly, so the
arbitration can be measured against the truth without any other part running.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from schemas.records import AssetType, RawTick, RawTrade, Side

__all__ = ["ProviderModel", "synthetic_ticks", "trade_of", "truth_at"]


@dataclass(frozen=True, slots=True)
class ProviderModel:
    name: str
    noise_bps: float = 5.0  # standard deviation of the quote around the truth
    lag_ms: int = 0  # the quote shows the truth of lag_ms ago
    every_ms: int = 1_000
    bad_print_rate: float = 0.0  # probability that a quote is off by 2-5 %
    dark_from_ms: int | None = None  # offset from the start at which it goes silent...
    dark_until_ms: int | None = None  # ... and comes back
    # The fields below change nothing when left at their defaults, and draw no random number
    # unless set, so callers that do not set them get the same ticks as before they existed.
    spread_bps: float = 4.0  # bid-ask spread around the quote
    delay_ms: int = 0  # the quote of event time t arrives (ingest_time_ms) at t + delay_ms
    gap_rate: float = 0.0  # probability that a tick is silently skipped
    frozen_from_ms: int | None = None  # offset from which it repeats its last price
    degrade_from_ms: int | None = None  # offset from which its noise is degraded_noise_bps
    degraded_noise_bps: float = 0.0
    # Copies another provider (named earlier in the list): its error is that provider's latest
    # noise draw for the symbol as of the tick's time, plus its own noise of noise_bps.
    copy_of: str | None = None
    bias_bps: float = 0.0  # a constant error on top of the noise (a wrong or hostile feed)


def synthetic_ticks(
    symbols: list[str],
    providers: list[ProviderModel],
    start_ms: int,
    duration_ms: int,
    seed: int = 7,
    step_vol: float = 2e-4,
) -> tuple[list[RawTick], dict[str, list[tuple[int, float]]]]:
    """Ticks of every provider for every symbol in arrival order (``ingest_time_ms``, which is
    the event time unless a provider has a ``delay_ms``), and the truth path
    (symbol -> [(time, price)] every 100 ms, each step a relative move of sigma ``step_vol``)."""
    rng = random.Random(seed)
    truth: dict[str, list[tuple[int, float]]] = {}
    for i, symbol in enumerate(symbols):
        price, path = 100.0 * (i + 1), []
        for t in range(start_ms, start_ms + duration_ms, 100):
            price *= 1 + rng.gauss(0, step_vol)
            path.append((t, price))
        truth[symbol] = path
    ticks: list[RawTick] = []
    seq = 0
    draws: dict[tuple[str, str], tuple[list[int], list[float]]] = {}  # noise draws, by time
    for p in providers:
        for symbol in symbols:
            path = truth[symbol]
            times: list[int] = []
            errors: list[float] = []
            draws[(p.name, symbol)] = (times, errors)
            last_px: float | None = None
            for t in range(
                start_ms + rng.randrange(p.every_ms), start_ms + duration_ms, p.every_ms
            ):
                off = t - start_ms
                dark_until = p.dark_until_ms if p.dark_until_ms is not None else 1 << 60
                if p.dark_from_ms is not None and p.dark_from_ms <= off < dark_until:
                    continue
                if p.gap_rate and rng.random() < p.gap_rate:
                    continue
                if p.frozen_from_ms is not None and off >= p.frozen_from_ms and last_px:
                    px = last_px
                else:
                    true = path[max(0, (off - p.lag_ms) // 100)][1]
                    noise = p.noise_bps
                    if p.degrade_from_ms is not None and off >= p.degrade_from_ms:
                        noise = p.degraded_noise_bps
                    eps = rng.gauss(0, noise / 1e4)
                    if p.copy_of is not None:
                        eps += _copied(draws, p.copy_of, symbol, t)
                    times.append(t)
                    errors.append(eps)
                    px = true * (1 + eps + p.bias_bps / 1e4)
                    if rng.random() < p.bad_print_rate:
                        px *= 1 + rng.choice((-1, 1)) * rng.uniform(0.02, 0.05)
                last_px = px
                half = px * (p.spread_bps / 2 / 1e4)
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
                        ingest_time_ms=t + p.delay_ms,
                        seq=seq,
                    )
                )
    # in arrival order (event-time order when no provider has a delay)
    ticks.sort(key=lambda r: (r.ingest_time_ms, r.provider, r.symbol))
    return ticks, truth


def _copied(
    draws: dict[tuple[str, str], tuple[list[int], list[float]]], name: str, symbol: str, t: int
) -> float:
    """The noise draw of provider ``name`` for ``symbol`` at or before ``t`` (its first one
    before it has any)."""
    got = draws.get((name, symbol))
    if got is None:
        raise ValueError(f"copy_of={name!r}: no such provider earlier in the list")
    times, errors = got
    if not errors:
        return 0.0
    return errors[max(bisect.bisect_right(times, t) - 1, 0)]


def truth_at(path: list[tuple[int, float]], start_ms: int, t: int) -> float:
    return path[min(max((t - start_ms) // 100, 0), len(path) - 1)][1]


def trade_of(
    tick: RawTick, trade_id: str, amount: float, seq: int | None = None, side: Side | None = None
) -> RawTrade:
    """A trade by ``tick``'s provider at its price and times (``seq``: the tick's unless
    given), for tests and benchmarks that need trades beside synthetic ticks."""
    return RawTrade(
        provider=tick.provider,
        symbol=tick.symbol,
        provider_symbol=tick.provider_symbol,
        asset_type=tick.asset_type,
        trade_id=trade_id,
        price=tick.price,
        amount=amount,
        side=side,
        event_time_ms=tick.event_time_ms,
        ingest_time_ms=tick.ingest_time_ms,
        seq=tick.seq if seq is None else seq,
    )
