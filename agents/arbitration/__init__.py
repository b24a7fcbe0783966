"""Arbitration: raw provider ticks -> confidence-scored prices, quotes, trades and candles.

``core/`` is pure (no I/O): the reference ``Processor`` and the algorithm it runs (consensus,
candles, reliability, lags, copies, volatility, the symbol state and the checkpoint); ``app``
and ``agent`` are the Faust wiring, ``fence`` reads back the final candles a crashed
worker already emitted, ``rebuild`` replays the raw topics; ``cli`` adds ``fiml arbitrate`` and
``fiml rebuild``.
"""

from agents.arbitration.core.candles import SymbolCandles
from agents.arbitration.core.consensus import (
    ConsensusParams,
    ConsensusResult,
    Quote,
    compute_consensus,
)
from agents.arbitration.core.processor import Processor
from agents.arbitration.settings import ArbitrationSettings

__all__ = [
    "ArbitrationSettings",
    "ConsensusParams",
    "ConsensusResult",
    "Processor",
    "Quote",
    "SymbolCandles",
    "compute_consensus",
]
