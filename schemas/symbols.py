"""Canonical symbols, and conversion to and from each provider's spelling.

Canonical forms (upper case, what every topic key and record ``symbol`` holds):

=========  ==============  =====================================================================
asset      example         rule
=========  ==============  =====================================================================
crypto     ``BTC/USDT``    ``BASE/QUOTE`` (ccxt's spot market symbol); not both fiat
fx         ``EUR/USD``     ``BASE/QUOTE``, both ISO 4217 fiat currencies
commodity  ``XAU/USD``     ``METAL/QUOTE``: ISO 4217 metal code (XAU XAG XPT XPD) in a fiat
equity     ``AAPL``        ticker, optional one-letter share class after a dot: ``BRK.B``
index      ``^GSPC``       ``^`` + code, Yahoo-style (``^GSPC`` S&P 500, ``^DJI``, ``^IXIC``)
=========  ==============  =====================================================================

Indices use Yahoo's caret form because it is the only widely used spelling that cannot be
mistaken for an equity ticker (``SPX`` is also a fund ticker elsewhere).

Every conversion either returns an exact answer or raises ``SymbolError`` with the reason: a
symbol that could mean two things (``BTCBUSD`` = BTC/BUSD or BTCB/USD) is refused, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from schemas.errors import SymbolError
from schemas.records import AssetType

__all__ = [
    "EXCHANGE_QUOTES",
    "FIAT",
    "METALS",
    "classify",
    "from_alpha_vantage",
    "from_ccxt",
    "from_exchange_id",
    "from_fmp",
    "from_url",
    "from_url_list",
    "from_yfinance",
    "normalize",
    "split_pair",
    "to_alpha_vantage",
    "to_ccxt",
    "to_exchange_id",
    "to_fmp",
    "to_url",
    "to_yfinance",
]

# ISO 4217 fiat codes we accept as currencies (FX legs, crypto and metal quotes).
# fmt: off
FIAT = frozenset({
    "USD", "EUR", "JPY", "GBP", "AUD", "CAD", "CHF", "CNY", "CNH", "HKD", "NZD", "SEK", "NOK",
    "DKK", "SGD", "KRW", "INR", "BRL", "MXN", "ZAR", "TRY", "RUB", "PLN", "CZK", "HUF", "ILS",
    "THB", "IDR", "MYR", "PHP", "TWD", "SAR", "AED", "ARS", "CLP", "COP", "PEN", "NGN", "UAH",
    "VND", "EGP", "KZT", "PKR", "KWD", "QAR", "BHD", "RON", "BGN", "ISK",
})
METALS = frozenset({"XAU", "XAG", "XPT", "XPD"})
# Quote assets recognised at the end of concatenated exchange ids such as ``BTCUSDT``.
EXCHANGE_QUOTES = frozenset({
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "USD", "EUR", "GBP", "TRY", "BRL", "JPY",
    "AUD", "BTC", "ETH", "BNB",
})
# fmt: on

_ASSET = re.compile(r"[A-Z0-9]{1,15}")
_EQUITY = re.compile(r"[A-Z][A-Z0-9]{0,9}(?:\.[A-Z])?")
_INDEX = re.compile(r"\^[A-Z0-9]{1,10}")
_URL_SAFE = re.compile(r"[A-Z0-9._~]+")


def _pair_type(base: str, quote: str) -> AssetType:
    if base in FIAT and quote in FIAT:
        return AssetType.FX
    if base in METALS and quote in FIAT:
        return AssetType.COMMODITY
    return AssetType.CRYPTO


def classify(symbol: str) -> AssetType:
    """The asset type of a canonical symbol.

    Raises:
        SymbolError: ``symbol`` is not in a canonical form.
    """
    if _INDEX.fullmatch(symbol):
        return AssetType.INDEX
    if "/" in symbol:
        return _pair_type(*split_pair(symbol))
    if _EQUITY.fullmatch(symbol):
        return AssetType.EQUITY
    raise SymbolError(symbol, "not a canonical symbol (BTC/USDT, EUR/USD, AAPL, BRK.B, ^GSPC)")


def split_pair(symbol: str) -> tuple[str, str]:
    """``("BTC", "USDT")`` for ``"BTC/USDT"``.

    Raises:
        SymbolError: not ``BASE/QUOTE`` with two distinct alphanumeric codes.
    """
    if ":" in symbol:
        raise SymbolError(symbol, "derivative markets (BASE/QUOTE:SETTLE) are not supported")
    parts = symbol.split("/")
    if len(parts) != 2 or not all(_ASSET.fullmatch(p) for p in parts):
        raise SymbolError(symbol, "a pair must be BASE/QUOTE with alphanumeric codes")
    if parts[0] == parts[1]:
        raise SymbolError(symbol, "base and quote are the same")
    return parts[0], parts[1]


def normalize(symbol: str, asset_type: AssetType | None = None) -> str:
    """The canonical form of ``symbol``: trimmed and upper-cased, then validated.

    Only case and surrounding spaces are fixed; any other spelling is rejected so that a
    provider form (``BTCUSDT``) is never mistaken for a canonical one.

    Raises:
        SymbolError: not a canonical symbol, or not of ``asset_type`` when one is given.
    """
    canonical = symbol.strip().upper()
    kind = classify(canonical)
    if asset_type is not None and kind != asset_type:
        raise SymbolError(symbol, f"is {kind.value}, not {AssetType(asset_type).value}")
    return canonical


def _require(symbol: str, *allowed: AssetType, provider: str) -> AssetType:
    kind = classify(symbol)
    if kind not in allowed:
        raise SymbolError(symbol, f"{provider} has no {kind.value} symbols")
    return kind


# --- ccxt -----------------------------------------------------------------------------------


def to_ccxt(symbol: str) -> str:
    """The ccxt unified spot market symbol (identical to the canonical crypto form)."""
    _require(symbol, AssetType.CRYPTO, provider="ccxt")
    return symbol


def from_ccxt(market_symbol: str) -> str:
    """Canonical symbol of a ccxt unified spot market symbol such as ``BTC/USDT``."""
    canonical = normalize(market_symbol)
    _require(canonical, AssetType.CRYPTO, provider="ccxt")
    return canonical


def to_exchange_id(symbol: str, sep: str = "") -> str:
    """An exchange's market id: ``BTCUSDT`` (Binance-style) or ``BTC-USDT`` with ``sep="-"``."""
    _require(symbol, AssetType.CRYPTO, provider="exchange ids")
    return sep.join(split_pair(symbol))


def from_exchange_id(
    exchange_id: str, sep: str = "", markets: Collection[str] | None = None
) -> str:
    """Canonical symbol of an exchange market id.

    With ``sep`` the id is split on it. Without, the quote is found among ``EXCHANGE_QUOTES``
    at the end of the id; if several fit (``BTCBUSD``: BTC/BUSD or BTCB/USD), ``markets`` (the
    exchange's canonical symbols, e.g. ccxt's ``exchange.symbols``) must single one out.

    Raises:
        SymbolError: unknown quote, or still ambiguous.
    """
    raw = exchange_id.strip().upper()
    if sep:
        base, _, quote = raw.partition(sep.upper())
        return from_ccxt(f"{base}/{quote}")
    candidates = [
        f"{raw[: -len(q)]}/{q}" for q in EXCHANGE_QUOTES if raw.endswith(q) and len(raw) > len(q)
    ]
    if not candidates:
        raise SymbolError(exchange_id, "no known quote currency at the end of the id")
    if markets is not None:
        candidates = [c for c in candidates if c in markets]
        if not candidates:
            raise SymbolError(exchange_id, "none of its readings is among the given markets")
    if len(candidates) > 1:
        options = " or ".join(sorted(candidates))
        raise SymbolError(exchange_id, f"ambiguous: {options}; pass markets to decide")
    return from_ccxt(candidates[0])


# --- yfinance -------------------------------------------------------------------------------


def to_yfinance(symbol: str) -> str:
    """Yahoo Finance ticker: ``BTC-USD``, ``EURUSD=X``, ``^GSPC``, ``AAPL``, ``BRK-B``."""
    kind = _require(
        symbol,
        AssetType.CRYPTO,
        AssetType.FX,
        AssetType.EQUITY,
        AssetType.INDEX,
        provider="yfinance",
    )
    if kind is AssetType.FX:
        return "".join(split_pair(symbol)) + "=X"
    return symbol.replace("/", "-").replace(".", "-")


def from_yfinance(ticker: str) -> str:
    """Canonical symbol of a Yahoo Finance ticker (also ``JPY=X``, Yahoo's USD/JPY).

    Raises:
        SymbolError: futures (``GC=F``), exchange suffixes (``SAP.DE``), unknown forms.
    """
    raw = ticker.strip().upper()
    if raw.endswith("=X"):
        code = raw[:-2]
        if len(code) == 3:  # Yahoo's short form for USD-based pairs
            code = "USD" + code
        if len(code) != 6 or code[:3] not in FIAT or code[3:] not in FIAT:
            raise SymbolError(ticker, "a Yahoo FX ticker is XXXYYY=X with two fiat currencies")
        return f"{code[:3]}/{code[3:]}"
    if "=" in raw:
        raise SymbolError(ticker, "futures and other '=' tickers are not supported")
    if "." in raw:
        raise SymbolError(ticker, "exchange suffixes are not supported; give market instead")
    if "-" in raw:
        base, _, tail = raw.partition("-")
        if len(tail) == 1:  # Yahoo spells share classes with a dash: BRK-B
            return normalize(f"{base}.{tail}", AssetType.EQUITY)
        if tail not in FIAT and tail not in EXCHANGE_QUOTES:
            raise SymbolError(ticker, f"{tail!r} is neither a share class nor a known quote")
        return normalize(f"{base}/{tail}", AssetType.CRYPTO)
    canonical = normalize(raw)
    _require(canonical, AssetType.EQUITY, AssetType.INDEX, provider="yfinance")
    return canonical


# --- Alpha Vantage --------------------------------------------------------------------------


def to_alpha_vantage(symbol: str) -> tuple[str, str | None]:
    """Alpha Vantage parameters: ``("AAPL", None)`` for equities (``symbol=``), and
    ``(from, to)`` for FX (``from_currency``/``to_currency``) and crypto (``symbol``/``market``,
    which Alpha Vantage requires to be a fiat currency)."""
    kind = _require(
        symbol, AssetType.EQUITY, AssetType.FX, AssetType.CRYPTO, provider="Alpha Vantage"
    )
    if kind is AssetType.EQUITY:
        return symbol, None
    base, quote = split_pair(symbol)
    if quote not in FIAT:
        raise SymbolError(symbol, "Alpha Vantage quotes crypto in fiat currencies only")
    return base, quote


def from_alpha_vantage(symbol: str, market: str | None = None) -> str:
    """Canonical symbol from Alpha Vantage parameters (the inverse of ``to_alpha_vantage``)."""
    if market is None:
        return normalize(symbol, AssetType.EQUITY)
    canonical = normalize(f"{symbol.strip()}/{market.strip()}")
    _require(canonical, AssetType.FX, AssetType.CRYPTO, provider="Alpha Vantage")
    if split_pair(canonical)[1] not in FIAT:
        raise SymbolError(canonical, "Alpha Vantage markets are fiat currencies")
    return canonical


# --- FMP ------------------------------------------------------------------------------------


def to_fmp(symbol: str) -> str:
    """Financial Modeling Prep symbol: ``BTCUSD``, ``EURUSD``, ``XAUUSD``, ``AAPL``, ``BRK-B``,
    ``^GSPC``."""
    kind = classify(symbol)
    if kind in (AssetType.EQUITY, AssetType.INDEX):
        return symbol.replace(".", "-")
    base, quote = split_pair(symbol)
    if quote not in FIAT:
        raise SymbolError(symbol, "FMP quotes pairs in fiat currencies only")
    return base + quote


def from_fmp(symbol: str, asset_type: AssetType | None = None) -> str:
    """Canonical symbol of an FMP symbol.

    A concatenated pair (``BTCUSD``) and a ticker (``AAPL``) look alike; without
    ``asset_type``, strings of 6+ characters ending in a fiat code are read as pairs, 3-5
    characters without such an ending as tickers, and anything that fits both is refused.

    Raises:
        SymbolError: unknown form, or ambiguous without ``asset_type``.
    """
    raw = symbol.strip().upper()
    if raw.startswith("^"):
        return normalize(raw, AssetType.INDEX)
    if "-" in raw:
        return normalize(raw.replace("-", "."), AssetType.EQUITY)
    pair_like = len(raw) > 3 and raw[-3:] in FIAT
    if asset_type is None:
        if pair_like and len(raw) <= 5:
            raise SymbolError(symbol, "could be a ticker or a pair; pass asset_type")
        asset_type = _pair_type(raw[:-3], raw[-3:]) if pair_like else AssetType.EQUITY
    if asset_type in (AssetType.EQUITY, AssetType.INDEX):
        return normalize(raw, asset_type)
    if not pair_like:
        raise SymbolError(symbol, "an FMP pair ends in a fiat currency code")
    return normalize(f"{raw[:-3]}/{raw[-3:]}", asset_type)


# --- URL ------------------------------------------------------------------------------------


def to_url(symbol: str) -> str:
    """URL-path-safe form for ``/ws/prices/{symbols}``: ``/`` -> ``_``, ``^`` -> ``~``.

    Both replacements are RFC 3986 unreserved characters that no canonical symbol contains,
    so the mapping is reversible; plain tickers (``AAPL``) are unchanged, as seed clients
    expect.
    """
    classify(symbol)
    return symbol.replace("/", "_").replace("^", "~")


def from_url(part: str) -> str:
    """Canonical symbol from its URL form (case-insensitive).

    Raises:
        SymbolError: characters outside the URL form, or not a canonical symbol.
    """
    raw = part.strip().upper()
    if not _URL_SAFE.fullmatch(raw):
        raise SymbolError(part, "URL symbols use A-Z, 0-9 and . _ ~ only (BTC_USDT, ~GSPC)")
    return normalize(raw.replace("_", "/").replace("~", "^"))


def from_url_list(path: str, limit: int = 50) -> list[str]:
    """Canonical symbols of a comma-separated URL segment, duplicates dropped, order kept.

    Raises:
        SymbolError: an empty list, more than ``limit`` symbols, or a bad symbol.
    """
    parts = [p for p in path.split(",") if p.strip()]
    if not parts:
        raise SymbolError(path, "no symbols given")
    if len(parts) > limit:
        raise SymbolError(path, f"{len(parts)} symbols; at most {limit} are allowed")
    return list(dict.fromkeys(from_url(p) for p in parts))
