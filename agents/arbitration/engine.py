"""Which arbitration engine runs: the compiled core (``native/arbcore``) or the Python reference.

``agents/arbitration/core/processor.py``'s ``Processor`` is the readable reference; the
compiled core (the ``fiml_arbcore`` module, Rust through PyO3, built by ``make setup``) gives
byte-identical outputs and marks for the same records (``tests/unit/arbitration/
test_compiled_core.py`` holds it to that), 14 to 16 times faster on the synthetic workload
(``process_many``, ``drain`` and ``mark`` of 100k records: ~130k records/s against ~9k).
``FIML_ARB_ENGINE`` chooses: ``compiled`` (the default) or ``python``.

The compiled core asks Python for what only Python can say exactly: a raw record its strict
parser cannot prove valid goes through ``decode_raw`` (``_Fallback``), and the dead-letter
reasons of pydantic's validation errors and of the time bounds are Python's own text.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Protocol

import orjson

from agents.arbitration.core.processor import OutOfTimeError, Output, Processor
from agents.arbitration.core.state import SymbolState
from agents.arbitration.settings import ArbitrationSettings
from schemas.codec import decode_raw, encode
from schemas.errors import DecodeError
from schemas.records import ProviderHealth, TradeUpdate

__all__ = [
    "ArbitrationEngine",
    "CompiledProcessor",
    "EngineUnavailableError",
    "RawBatch",
    "make_processor",
    "settings_json",
]

#: One fetch of a raw partition: (key, value, offset) in offset order.
RawBatch = Sequence[tuple[bytes | None, bytes, int]]

_MISSING = (
    "The compiled arbitration core (fiml_arbcore) is not installed: `make setup` builds it "
    "(it needs Rust's cargo: install it from https://rustup.rs), or set FIML_ARB_ENGINE=python "
    "to use the Python reference."
)


#: The compiled core's sources, when this is a checkout (an installed image has none).
CORE_SOURCES = Path(__file__).resolve().parents[2] / "native" / "arbcore"

_MANIFESTS = ["Cargo.toml", "Cargo.lock"]


def source_fingerprint(root: Path) -> str:
    """FNV-1a 64 over the core's sources (``src/*.rs``, ``Cargo.toml``, ``Cargo.lock``), each
    name and a NUL then its bytes, by name: what ``native/arbcore/build.rs`` computes into
    ``fiml_arbcore.SOURCE_FINGERPRINT``."""
    names = sorted([f"src/{p.name}" for p in (root / "src").glob("*.rs")] + _MANIFESTS)
    value = 0xCBF29CE484222325
    for name in names:
        for byte in name.encode() + b"\0" + (root / name).read_bytes():
            value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


_STALE = (
    "The compiled arbitration core in this environment was built from other sources than "
    "native/arbcore: run `make setup` to rebuild it (or set FIML_ARB_ENGINE=python)."
)


class EngineUnavailableError(RuntimeError):
    """``FIML_ARB_ENGINE=compiled`` and the compiled core cannot be imported."""


class ArbitrationEngine(Protocol):
    """What the worker drives: ``Processor`` and ``CompiledProcessor`` both are one."""

    settings: ArbitrationSettings
    poison: int
    out_of_time: int
    invalid: int
    skipped: int

    @property
    def marks(self) -> AbstractSet[int]:
        """Partitions whose mark changed since it was last saved."""
        ...

    def restore(self, partition: int, mark: bytes | None) -> None: ...
    def forget(self, partitions: Iterable[int]) -> None: ...
    def process(self, key: bytes | None, value: bytes, partition: int, offset: int) -> None: ...
    def process_many(self, partition: int, records: RawBatch) -> None: ...
    def mark(self, partition: int) -> bytes: ...
    def drain_partitions(self) -> dict[int, list[Output]]: ...
    def drain(self) -> list[Output]: ...
    def resume_offset(self, partition: int) -> int | None: ...
    def late_ticks(self) -> int: ...
    def symbol_state(self, partition: int, symbol: str) -> SymbolState: ...


def settings_json(settings: ArbitrationSettings) -> bytes:
    """What the compiled core reads of ``settings``, as JSON."""
    return orjson.dumps(
        {
            "grace_ms": settings.grace_ms,
            "throttle_ms": settings.throttle_ms,
            "quote_ms": settings.quote_ms,
            "health_every_ms": settings.health_every_ms,
            "dedup_ms": settings.dedup_ms,
            "stale_ms": settings.stale_ms,
            "max_symbols": settings.max_symbols,
            "max_ahead_ms": settings.time_bounds.max_ahead_ms,
            "max_age_ms": settings.time_bounds.max_age_ms,
        }
    )


def _reason(exc: Exception) -> str:
    """The processor's dead-letter reason of an exception."""
    return f"{type(exc).__name__}: {exc}"


class _Fallback:
    """The compiled core's way back to Python for the rare records and messages it leaves to
    the reference (see the module docstring)."""

    def __init__(self, settings: ArbitrationSettings) -> None:
        self._bounds = settings.time_bounds

    def __call__(self, value: bytes) -> tuple[bool, bytes | str]:
        """``decode_raw``: (True, the record's canonical bytes) or (False, the reason)."""
        try:
            return True, encode(decode_raw(value))
        except (DecodeError, ValueError, TypeError) as exc:
            return False, _reason(exc)

    def out_of_time(self, value: bytes) -> str:
        record = decode_raw(value)
        problem = self._bounds.problem(
            record.event_time_ms, record.ingest_time_ms, record.asset_type.value, record.history
        )
        return _reason(OutOfTimeError(problem))

    def trade_error(
        self,
        symbol: str,
        trade_id: str,
        price: float,
        amount: float,
        side: Any,
        provider: str,
        event_time_ms: int,
    ) -> str:
        try:
            TradeUpdate(
                symbol=symbol,
                trade_id=trade_id,
                price=price,
                amount=amount,
                side=side,
                providers=[provider],
                event_time_ms=event_time_ms,
            )
        except Exception as exc:
            return _reason(exc)
        return "RuntimeError: the compiled core refused a TradeUpdate that Python accepts"

    def health_error(
        self,
        provider: str,
        state: Any,
        symbol: str,
        event_time_ms: int,
        reliability: float,
        error_bps: float,
        staleness_ms: float,
        ticks: int,
        errors: int,
    ) -> str:
        try:
            ProviderHealth(
                provider=provider,
                state=state,
                symbol=symbol,
                event_time_ms=event_time_ms,
                reliability=reliability,
                error_bps=error_bps,
                staleness_ms=staleness_ms,
                ticks=ticks,
                errors=errors,
            )
        except Exception as exc:
            return _reason(exc)
        return "RuntimeError: the compiled core refused a ProviderHealth that Python accepts"


class CompiledProcessor:
    """The compiled core behind ``Processor``'s interface (``ArbitrationEngine``).

    Raises:
        EngineUnavailableError: ``fiml_arbcore`` is not installed.
    """

    def __init__(self, settings: ArbitrationSettings) -> None:
        try:
            module = importlib.import_module("fiml_arbcore")
        except ImportError:
            raise EngineUnavailableError(_MISSING) from None
        if CORE_SOURCES.is_dir() and _checkout_fingerprint() != module.SOURCE_FINGERPRINT:
            raise EngineUnavailableError(_STALE)
        self.settings = settings
        self._core: Any = module.Core(settings_json(settings), _Fallback(settings))

    @property
    def marks(self) -> AbstractSet[int]:
        marks: set[int] = self._core.marks
        return marks

    # the counters live in the core; the worker reads and resets ``poison``
    @property
    def poison(self) -> int:
        return int(self._core.poison)

    @poison.setter
    def poison(self, value: int) -> None:
        self._core.poison = value

    @property
    def out_of_time(self) -> int:
        return int(self._core.out_of_time)

    @out_of_time.setter
    def out_of_time(self, value: int) -> None:
        self._core.out_of_time = value

    @property
    def invalid(self) -> int:
        return int(self._core.invalid)

    @invalid.setter
    def invalid(self, value: int) -> None:
        self._core.invalid = value

    @property
    def skipped(self) -> int:
        return int(self._core.skipped)

    @skipped.setter
    def skipped(self, value: int) -> None:
        self._core.skipped = value

    def restore(self, partition: int, mark: bytes | None) -> None:
        """``Processor.restore``.

        Raises:
            ValueError: ``mark`` is not a checkpoint this build reads; the exception is the
                reference's own (its type and message), asked of it on this rare path.
        """
        try:
            self._core.restore(partition, mark)
        except ValueError:
            Processor(self.settings).restore(partition, mark)  # raises the reference's error
            raise

    def forget(self, partitions: Iterable[int]) -> None:
        self._core.forget(list(partitions))

    def process(self, key: bytes | None, value: bytes, partition: int, offset: int) -> None:
        self._core.process(key, value, partition, offset)

    def process_many(self, partition: int, records: RawBatch) -> None:
        """``process`` of each (key, value, offset) of ``partition``, in one call."""
        self._core.process_many(partition, records)

    def mark(self, partition: int) -> bytes:
        mark: bytes = self._core.mark(partition)
        return mark

    def drain_partitions(self) -> dict[int, list[Output]]:
        outputs: dict[int, list[Output]] = self._core.drain_partitions()
        return outputs

    def drain(self) -> list[Output]:
        outputs: list[Output] = self._core.drain()
        return outputs

    def resume_offset(self, partition: int) -> int | None:
        offset: int | None = self._core.resume_offset(partition)
        return offset

    def late_ticks(self) -> int:
        return int(self._core.late_ticks())

    def symbol_state(self, partition: int, symbol: str) -> SymbolState:
        """``Processor.symbol_state``, read back from the core's bytes.

        Raises:
            KeyError: the partition holds no such symbol.
        """
        return SymbolState.from_bytes(self.symbol_state_bytes(partition, symbol))

    def symbol_state_bytes(self, partition: int, symbol: str) -> bytes:
        """The state's ``to_bytes`` as the core holds it (the tests compare them)."""
        data: bytes = self._core.symbol_state(partition, symbol)
        return data


@functools.cache
def _checkout_fingerprint() -> str:
    return source_fingerprint(CORE_SOURCES)


def make_processor(settings: ArbitrationSettings) -> Processor | CompiledProcessor:
    """The engine ``settings.engine`` names (``FIML_ARB_ENGINE``).

    Raises:
        EngineUnavailableError: the compiled core is asked for and not installed (the message
            says how to build it, or how to choose the Python reference).
    """
    if settings.engine == "python":
        return Processor(settings)
    return CompiledProcessor(settings)
