"""Configuration of the simulator: the simulated providers and the market they observe.

Defaults give four providers of decreasing quality, so that arbitration has something to
arbitrate: a fast precise one, two middling ones and a slow noisy one that often goes down.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemas.records import AssetType

__all__ = [
    "ANNUAL_VOLATILITY",
    "DEFAULT_PROVIDERS",
    "DEFAULT_SYMBOLS",
    "SimConfig",
    "SimProviderConfig",
]

#: The demo's symbols: the ones the FIML seed's example clients ask for.
DEFAULT_SYMBOLS = ("AAPL", "GOOGL", "MSFT", "TSLA", "NVDA", "BTC/USDT", "ETH/USDT")

# Annualised volatility of the latent price per asset type: crypto > equity > fx, roughly the
# long-run realised figures (BTC ~60-80 %, large-cap US equity ~25-30 %, major FX ~7-10 %).
ANNUAL_VOLATILITY: dict[AssetType, float] = {
    AssetType.CRYPTO: 0.7,
    AssetType.EQUITY: 0.28,
    AssetType.INDEX: 0.18,
    AssetType.COMMODITY: 0.16,
    AssetType.FX: 0.08,
}

# Starting prices of the demo symbols (anything else starts at 100, or 1.1 for fx).
INITIAL_PRICES = {
    "AAPL": 190.0,
    "GOOGL": 175.0,
    "MSFT": 420.0,
    "TSLA": 250.0,
    "NVDA": 130.0,
    "BTC/USDT": 65_000.0,
    "ETH/USDT": 3_200.0,
    "EUR/USD": 1.08,
}


@dataclass(frozen=True, slots=True)
class SimProviderConfig:
    """One simulated provider.

    Rates are probabilities per tick opportunity (one opportunity per symbol every
    ``tick_interval_ms`` on average): ``gap_rate`` silently skips a tick; ``outage_rate`` starts
    an outage of ``outage_ms`` during which nothing is sent; ``outlier_rate`` turns a tick into a
    bad print ``outlier_bps`` (x1 to x3) away from the truth. ``delay_ms`` is how stale its
    quotes are: a tick stamped ``t`` carries the true price of ``t`` and reaches ingestion at
    ``t + delay_ms``. ``noise_bps`` is the standard deviation of its error.
    """

    name: str
    tick_interval_ms: int = 500
    noise_bps: float = 3.0
    spread_bps: float = 2.0
    delay_ms: int = 0
    gap_rate: float = 0.0
    outage_rate: float = 0.0
    outage_ms: int = 10_000
    outlier_rate: float = 0.0
    outlier_bps: float = 300.0
    trade_rate: float = 0.3


DEFAULT_PROVIDERS = (
    SimProviderConfig(
        "sim-alpha",
        250,
        noise_bps=1.5,
        spread_bps=1.0,
        delay_ms=0,
        gap_rate=0.01,
        outage_rate=0.0002,
        outage_ms=5_000,
        outlier_rate=0.001,
    ),
    SimProviderConfig(
        "sim-beta",
        500,
        noise_bps=3.0,
        spread_bps=2.0,
        delay_ms=200,
        gap_rate=0.02,
        outage_rate=0.0005,
        outage_ms=10_000,
        outlier_rate=0.003,
    ),
    SimProviderConfig(
        "sim-gamma",
        1_000,
        noise_bps=6.0,
        spread_bps=4.0,
        delay_ms=500,
        gap_rate=0.05,
        outage_rate=0.001,
        outage_ms=20_000,
        outlier_rate=0.01,
    ),
    SimProviderConfig(
        "sim-delta",
        2_000,
        noise_bps=12.0,
        spread_bps=8.0,
        delay_ms=1_000,
        gap_rate=0.1,
        outage_rate=0.005,
        outage_ms=30_000,
        outlier_rate=0.02,
    ),
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The whole simulation: symbols, providers, seed and the event-time grid.

    ``start_ms`` is the event time of the first step and ``step_ms`` the grid the model moves
    on; nothing in the model reads the wall clock, so a seed and a config give the same
    records every time. ``rate`` multiplies every provider's tick rate.
    """

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    providers: tuple[SimProviderConfig, ...] = DEFAULT_PROVIDERS
    seed: int = 0
    start_ms: int = 1_700_000_000_000
    step_ms: int = 50
    truth: bool = True
    trades: bool = True
    initial_prices: dict[str, float] = field(default_factory=lambda: dict(INITIAL_PRICES))

    def scaled(self, rate: float) -> SimConfig:
        """The same simulation with every provider ticking ``rate`` times as often."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        providers = tuple(
            replace(p, tick_interval_ms=max(self.step_ms, round(p.tick_interval_ms / rate)))
            for p in self.providers
        )
        return replace(self, providers=providers)
