"""The Python client of FIML Stream's WebSocket gateway (docs/CLIENT.md).

``FimlStream(url).watch_prices(symbols)`` (and ``watch_quotes``, ``watch_trades``,
``watch_ohlcv``, ``watch``) are async iterators that reconnect and resume by themselves;
``replay`` and ``replay_columns`` read a range of history. ``FimlStream(url, binary=True)``
takes msgpack data frames.
"""

from fiml_stream.client import Backoff, FimlStream, FimlStreamError, Stats, records_of

__all__ = ["Backoff", "FimlStream", "FimlStreamError", "Stats", "records_of"]
