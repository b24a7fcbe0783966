"""Arbitration: raw provider ticks -> confidence-scored prices, quotes, trades and candles.

``consensus``, ``candles``, ``reliability``, ``state``, ``merge`` and ``processor`` are pure (no
I/O); ``app`` and ``agent`` are the Faust wiring, ``fence`` reads back the final candles a crashed
worker already emitted, ``rebuild`` replays the raw topics; ``cli`` adds ``fiml arbitrate`` and
``fiml rebuild``.
"""

from agents.arbitration.candles import SymbolCandles
from agents.arbitration.consensus import ConsensusParams, ConsensusResult, Quote, compute_consensus
from agents.arbitration.processor import Processor
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
