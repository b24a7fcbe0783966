"""Every error the ``schemas`` package raises, in one place.

The hierarchy::

    SchemaError                      base: anything a contract in this package refuses
    ├── DecodeError                  malformed bytes or an invalid record (says what, and where)
    ├── ProtocolError                an invalid WebSocket client message (carries an ErrorCode)
    └── SymbolError (+ ValueError)   an unknown or ambiguous symbol (says why; never guessed)

``SymbolError`` is also a ``ValueError`` so that pydantic validators and callers that already
catch ``ValueError`` handle it without knowing this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    # Imported only for annotations: protocol.py imports this module, not the other way round.
    from schemas.protocol import ErrorCode

__all__ = [
    "DecodeError",
    "ProtocolError",
    "SchemaError",
    "SymbolError",
    "summarize",
]


class SchemaError(Exception):
    """Base class of every error raised by ``schemas``."""


class DecodeError(SchemaError):
    """Bytes that are not valid JSON, or JSON that is not a valid record.

    Attributes:
        message: what was wrong, in words.
        field: dotted path of the offending field (``"price"``, ``"symbols.3"``), or ``None``
            when the problem is not tied to one field (bad JSON, wrong top-level type).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> DecodeError:
        """The first problem pydantic found, with its field path (and how many others)."""
        return cls(*summarize(exc))


class ProtocolError(SchemaError):
    """A WebSocket client message the server must answer with an ``error`` message.

    Attributes:
        code: the ``ErrorCode`` to send back.
        message: a human-readable explanation.
        field: the offending field, or ``None``.
        retry_after_ms: the same request may succeed after this long (``None``: it will not
            as it is).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_ms = retry_after_ms
        super().__init__(f"{code}: {field + ': ' if field else ''}{message}")


class SymbolError(SchemaError, ValueError):
    """An unknown, malformed or ambiguous symbol.

    Attributes:
        symbol: the symbol as given.
        reason: why it was rejected.
    """

    def __init__(self, symbol: str, reason: str) -> None:
        self.symbol = symbol
        self.reason = reason
        super().__init__(f"{symbol!r}: {reason}")


def summarize(exc: ValidationError) -> tuple[str, str | None]:
    """``(message, field)`` for the first error of ``exc``; the message counts the others.

    One error is enough to act on and keeps error messages to clients short and stable.
    """
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if not errors:  # pragma: no cover - pydantic never raises an empty ValidationError
        return str(exc), None
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix adds nothing
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return message, field
