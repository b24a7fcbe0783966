"""Ingestion agents: providers turn market data into RawTick / RawTrade records on Kafka.

Public surface (the submodules are public too; heavy adapters are not imported here)::

    Provider, ProviderState, Event, Rejected       agents.ingest.base
    SimModel, SimulatorProvider, SimConfig ...     agents.ingest.simulator / simconfig
    ReplayProvider                                 agents.ingest.replay
    IngestProducer, ProducerStats, prepare         agents.ingest.producer
    IngestRunner, run_providers, run_simulation    agents.ingest.runner

Adapters with heavy dependencies live in ``ccxt_adapter``, ``yfinance_adapter``,
``alphavantage`` and ``fmp``; import them from there.
"""

from agents.ingest.base import Event, Provider, ProviderState, Rejected
from agents.ingest.producer import IngestProducer, ProducerStats, prepare
from agents.ingest.replay import ReplayProvider
from agents.ingest.runner import IngestRunner, ProviderStatus, run_providers, run_simulation
from agents.ingest.simconfig import DEFAULT_PROVIDERS, DEFAULT_SYMBOLS, SimConfig, SimProviderConfig
from agents.ingest.simulator import TRUTH_PROVIDER, SimModel, SimulatorProvider

__all__ = [
    "DEFAULT_PROVIDERS",
    "DEFAULT_SYMBOLS",
    "TRUTH_PROVIDER",
    "Event",
    "IngestProducer",
    "IngestRunner",
    "ProducerStats",
    "Provider",
    "ProviderState",
    "ProviderStatus",
    "Rejected",
    "ReplayProvider",
    "SimConfig",
    "SimModel",
    "SimProviderConfig",
    "SimulatorProvider",
    "prepare",
    "run_providers",
    "run_simulation",
]
