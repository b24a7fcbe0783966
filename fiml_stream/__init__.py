"""The Python client of FIML Stream's WebSocket gateway (docs/CLIENT.md).

``FimlStream(url).watch_prices(symbols)`` (and ``watch_quotes``, ``watch_trades``,
``watch_ohlcv``, ``watch``) are async iterators that reconnect and resume by themselves.
"""

from fiml_stream.client import Backoff, FimlStream, FimlStreamError, Stats

__all__ = ["Backoff", "FimlStream", "FimlStreamError", "Stats"]
