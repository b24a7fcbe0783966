"""``fiml ingest``: provider specs become providers; bad specs say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agents.ingest.alphavantage import AlphaVantageProvider
from agents.ingest.ccxt_adapter import CcxtProvider
from agents.ingest.cli import build_provider, register
from agents.ingest.errors import ProviderError
from agents.ingest.fmp import FmpProvider
from agents.ingest.replay import ReplayProvider
from agents.ingest.simulator import SimulatorProvider
from agents.ingest.yfinance_adapter import YFinanceProvider

FIXTURES = Path(__file__).parent / "fixtures"


def test_sim() -> None:
    provider = build_provider("sim", ["AAPL", "BTC/USDT"], seed=4, speed=0.0, max_ticks=10)
    assert isinstance(provider, SimulatorProvider)
    assert provider.symbols == ["AAPL", "BTC/USDT"]


def test_ccxt_by_exchange_id() -> None:
    provider = build_provider("ccxt:kraken", ["BTC/USDT"])
    assert isinstance(provider, CcxtProvider)
    assert (provider.name, provider.exchange_id) == ("ccxt_kraken", "kraken")


def test_yfinance() -> None:
    provider = build_provider("yfinance", ["AAPL"])
    assert isinstance(provider, YFinanceProvider) and provider.symbols == ["AAPL"]


def test_alphavantage_and_fmp_take_their_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "av-key")
    monkeypatch.setenv("FMP_API_KEY", "fmp-key")
    alpha = build_provider("alphavantage", ["IBM"])
    fmp = build_provider("fmp", ["IBM"])
    assert isinstance(alpha, AlphaVantageProvider) and alpha.api_key == "av-key"
    assert isinstance(fmp, FmpProvider) and fmp.api_key == "fmp-key"


@pytest.mark.parametrize("spec", ["alphavantage", "fmp"])
def test_a_missing_api_key_is_a_clear_error(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="_API_KEY"):
        build_provider(spec, ["IBM"])


def test_replay_of_a_file() -> None:
    path = FIXTURES / "ticks.csv"
    provider = build_provider(f"replay:{path}", ["*"])
    assert isinstance(provider, ReplayProvider)
    assert provider.path == path and provider.symbols == [] and provider.speed == 0.0
    paced = build_provider(f"replay:{path}", ["BTC/USDT"], speed=5.0)
    assert isinstance(paced, ReplayProvider)
    assert paced.symbols == ["BTC/USDT"] and paced.speed == 5.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "unknown provider 'bogus': use sim, ccxt:<exchange>"),
        ("", "unknown provider ''"),
        ("ccxt", "ccxt needs an exchange id"),
        ("ccxt:", "ccxt needs an exchange id"),
        ("ccxt:nosuchexchange", "ccxt has no exchange 'nosuchexchange'"),
        ("replay", "replay needs a file"),
        ("replay:/no/such/file.csv", "no such replay file '/no/such/file.csv'"),
        ("sim:fast", "sim takes no ':<argument>'"),
        ("yfinance:AAPL", "yfinance takes no"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(typer.BadParameter) as error:
        build_provider(spec, ["BTC/USDT"])
    assert message in str(error.value)


def test_a_symbol_the_provider_cannot_serve_is_refused() -> None:
    with pytest.raises(ValueError, match="ccxt has no equity"):
        build_provider("ccxt:binance", ["AAPL"])


def test_the_command_reports_a_bad_spec_and_exits_2() -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """fiml"""

    register(app)
    result = CliRunner().invoke(app, ["ingest", "--provider", "ccxt", "--symbols", "BTC/USDT"])
    assert result.exit_code == 2
    assert "error: 'ccxt': ccxt needs an exchange id" in result.output
