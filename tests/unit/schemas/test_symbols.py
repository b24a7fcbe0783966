"""Symbols: canonical forms, every provider's spelling both ways, and refusals with reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import symbols as sym
from schemas.errors import SymbolError
from schemas.records import AssetType


@pytest.mark.parametrize(
    ("symbol", "kind"),
    [
        ("BTC/USDT", AssetType.CRYPTO),
        ("1INCH/USDT", AssetType.CRYPTO),
        ("EUR/USDT", AssetType.CRYPTO),  # USDT is not fiat
        ("BTC/USD", AssetType.CRYPTO),
        ("EUR/USD", AssetType.FX),
        ("USD/JPY", AssetType.FX),
        ("XAU/USD", AssetType.COMMODITY),
        ("AAPL", AssetType.EQUITY),
        ("BRK.B", AssetType.EQUITY),
        ("^GSPC", AssetType.INDEX),
    ],
)
def test_classify(symbol: str, kind: AssetType) -> None:
    assert sym.classify(symbol) is kind
    assert sym.normalize(symbol.lower(), kind) == symbol


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        ("", "not a canonical symbol"),
        ("BTC/", "BASE/QUOTE"),
        ("BTC/USDT/X", "BASE/QUOTE"),
        ("BTC/BTC", "same"),
        ("BTC/USDT:USDT", "derivative"),
        ("BTC-USDT", "not a canonical symbol"),
        ("AAPL.NS.X", "not a canonical symbol"),
        ("SAP.DE", "not a canonical symbol"),
        ("^", "not a canonical symbol"),
        ("A B", "not a canonical symbol"),
        ("TOOLONGTICKER", "not a canonical symbol"),
    ],
)
def test_normalize_rejects_garbage_with_a_reason(garbage: str, reason: str) -> None:
    with pytest.raises(SymbolError, match=reason) as exc:
        sym.normalize(garbage)
    assert isinstance(exc.value, ValueError)
    assert exc.value.symbol == garbage and exc.value.reason


def test_normalize_checks_the_asset_type() -> None:
    assert sym.normalize("  eur/usd ") == "EUR/USD"
    with pytest.raises(SymbolError, match="is fx, not crypto"):
        sym.normalize("EUR/USD", AssetType.CRYPTO)


# (canonical, ccxt, exchange id) for crypto
@pytest.mark.parametrize(
    ("canonical", "exchange_id"),
    [
        ("BTC/USDT", "BTCUSDT"),
        ("ETH/BTC", "ETHBTC"),
        ("SOL/USDC", "SOLUSDC"),
        ("BNB/EUR", "BNBEUR"),
    ],
)
def test_ccxt_and_exchange_ids(canonical: str, exchange_id: str) -> None:
    assert sym.to_ccxt(canonical) == canonical
    assert sym.from_ccxt(canonical.lower()) == canonical
    assert sym.to_exchange_id(canonical) == exchange_id
    assert sym.from_exchange_id(exchange_id) == canonical
    assert sym.from_exchange_id(exchange_id.lower()) == canonical
    dashed = sym.to_exchange_id(canonical, sep="-")
    assert sym.from_exchange_id(dashed, sep="-") == canonical


def test_exchange_id_ambiguity_is_refused_not_guessed() -> None:
    with pytest.raises(SymbolError, match=r"ambiguous: BTC/BUSD or BTCB/USD"):
        sym.from_exchange_id("BTCBUSD")
    assert sym.from_exchange_id("BTCBUSD", markets={"BTC/BUSD", "ETH/USDT"}) == "BTC/BUSD"
    assert sym.from_exchange_id("BTCBUSD", markets={"BTCB/USD"}) == "BTCB/USD"
    with pytest.raises(SymbolError, match="among the given markets"):
        sym.from_exchange_id("BTCUSDT", markets={"ETH/USDT"})
    with pytest.raises(SymbolError, match="no known quote"):
        sym.from_exchange_id("BTCXYZ")
    with pytest.raises(SymbolError, match="no known quote"):
        sym.from_exchange_id("USDT")  # nothing left for the base


@pytest.mark.parametrize("symbol", ["AAPL", "EUR/USD", "^GSPC", "XAU/USD"])
def test_ccxt_refuses_non_crypto(symbol: str) -> None:
    with pytest.raises(SymbolError, match="ccxt has no"):
        sym.to_ccxt(symbol)
    with pytest.raises(SymbolError):
        sym.from_ccxt(symbol)


@pytest.mark.parametrize(
    ("canonical", "ticker"),
    [
        ("BTC/USD", "BTC-USD"),
        ("ETH/EUR", "ETH-EUR"),
        ("BTC/USDT", "BTC-USDT"),  # spelled as is: never silently mapped to USD
        ("EUR/USD", "EURUSD=X"),
        ("USD/JPY", "USDJPY=X"),
        ("^GSPC", "^GSPC"),
        ("AAPL", "AAPL"),
        ("BRK.B", "BRK-B"),
    ],
)
def test_yfinance_both_ways(canonical: str, ticker: str) -> None:
    assert sym.to_yfinance(canonical) == ticker
    assert sym.from_yfinance(ticker) == canonical


@pytest.mark.parametrize(
    ("ticker", "reason"),
    [
        ("GC=F", "futures"),
        ("SAP.DE", "exchange suffixes"),
        ("EURXYZ=X", "two fiat"),
        ("BAC-PL", "neither a share class nor a known quote"),
        ("EUR-USD", "is fx, not crypto"),
    ],
)
def test_yfinance_rejections(ticker: str, reason: str) -> None:
    with pytest.raises(SymbolError, match=reason):
        sym.from_yfinance(ticker)


def test_yfinance_short_fx_form_and_no_commodities() -> None:
    assert sym.from_yfinance("JPY=X") == "USD/JPY"
    with pytest.raises(SymbolError, match="yfinance has no commodity"):
        sym.to_yfinance("XAU/USD")


@pytest.mark.parametrize(
    ("canonical", "params"),
    [("AAPL", ("AAPL", None)), ("EUR/USD", ("EUR", "USD")), ("BTC/EUR", ("BTC", "EUR"))],
)
def test_alpha_vantage_both_ways(canonical: str, params: tuple[str, str | None]) -> None:
    assert sym.to_alpha_vantage(canonical) == params
    assert sym.from_alpha_vantage(*params) == canonical


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: sym.to_alpha_vantage("BTC/USDT"), "fiat currencies only"),
        (lambda: sym.to_alpha_vantage("^GSPC"), "Alpha Vantage has no index"),
        (lambda: sym.from_alpha_vantage("BTC", "USDT"), "markets are fiat"),
        (lambda: sym.from_alpha_vantage("EUR/USD"), "not a canonical|is fx"),
    ],
)
def test_alpha_vantage_rejections(call: object, reason: str) -> None:
    with pytest.raises(SymbolError, match=reason):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("canonical", "fmp"),
    [
        ("BTC/USD", "BTCUSD"),
        ("EUR/USD", "EURUSD"),
        ("XAU/USD", "XAUUSD"),
        ("AAPL", "AAPL"),
        ("BRK.B", "BRK-B"),
        ("^GSPC", "^GSPC"),
    ],
)
def test_fmp_both_ways(canonical: str, fmp: str) -> None:
    assert sym.to_fmp(canonical) == fmp
    assert sym.from_fmp(fmp) == canonical
    assert sym.from_fmp(fmp, sym.classify(canonical)) == canonical


def test_fmp_ambiguity_and_rejections() -> None:
    with pytest.raises(SymbolError, match="ticker or a pair"):
        sym.from_fmp("OPUSD")  # OP/USD or a five-letter ticker
    assert sym.from_fmp("OPUSD", AssetType.CRYPTO) == "OP/USD"
    assert sym.from_fmp("OPUSD", AssetType.EQUITY) == "OPUSD"
    assert sym.from_fmp("USD") == "USD"  # too short to be a pair
    with pytest.raises(SymbolError, match="fiat currencies only"):
        sym.to_fmp("BTC/USDT")
    with pytest.raises(SymbolError, match="ends in a fiat"):
        sym.from_fmp("AAPL", AssetType.CRYPTO)


@pytest.mark.parametrize(
    ("canonical", "url"),
    [("BTC/USDT", "BTC_USDT"), ("^GSPC", "~GSPC"), ("AAPL", "AAPL"), ("BRK.B", "BRK.B")],
)
def test_url_form_both_ways(canonical: str, url: str) -> None:
    assert sym.to_url(canonical) == url
    assert sym.from_url(url) == canonical
    assert sym.from_url(url.lower()) == canonical


def test_url_list() -> None:
    assert sym.from_url_list("AAPL,btc_usdt,,AAPL,~GSPC") == ["AAPL", "BTC/USDT", "^GSPC"]
    with pytest.raises(SymbolError, match="no symbols"):
        sym.from_url_list(",")
    with pytest.raises(SymbolError, match="at most 50"):
        sym.from_url_list(",".join(f"S{i}" for i in range(51)))
    with pytest.raises(SymbolError, match="URL symbols use"):
        sym.from_url("BTC/USDT")
    with pytest.raises(SymbolError, match="URL symbols use"):
        sym.from_url("%5EGSPC")


codes = st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True)


@given(base=codes, quote=st.sampled_from(sorted(sym.EXCHANGE_QUOTES | sym.FIAT)))
def test_pairs_round_trip_through_url_yfinance_and_dashed_ids(base: str, quote: str) -> None:
    if base == quote:
        return
    canonical = f"{base}/{quote}"
    assert sym.from_url(sym.to_url(canonical)) == canonical
    if sym.classify(canonical) is AssetType.CRYPTO:
        assert sym.from_exchange_id(sym.to_exchange_id(canonical, "-"), "-") == canonical
        assert sym.from_yfinance(sym.to_yfinance(canonical)) == canonical


@given(ticker=st.from_regex(r"[A-Z][A-Z0-9]{0,9}(\.[A-Z])?", fullmatch=True))
def test_equities_round_trip(ticker: str) -> None:
    assert sym.from_url(sym.to_url(ticker)) == ticker
    assert sym.from_yfinance(sym.to_yfinance(ticker)) == ticker
    assert sym.from_fmp(sym.to_fmp(ticker), AssetType.EQUITY) == ticker
