"""The dashboard in headless Chromium (Debian's package, driven by Playwright) against the
real pipeline started by ``fiml up``: prices appear and update, the chart draws candles, and a
second tab is live at the same time as the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.up_stack import fiml_up

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, never a downloaded browser; everything that phones home is off.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHARTS = (
    Path(__file__).resolve().parents[2]
    / "gateway"
    / "static"
    / "node_modules"
    / "lightweight-charts"
)


def test_dashboard_shows_live_prices_and_candles(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run `make chromium` (apt-get install chromium)")
    if not CHARTS.exists():
        pytest.fail("lightweight-charts is missing: run `make setup` (npm install)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    with fiml_up(kafka_bootstrap, port, tmp_path, "--symbols", "AAPL,BTC/USDT,ETH/USDT") as up:
        up.wait_for_line("gateway ready", timeout=90)
        up.wait_for_line("first price after", timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{up.gateway_url}/?symbol=BTC/USDT&interval=1s")
                page.wait_for_function("document.body.dataset.ws === 'open'", timeout=20_000)
                # Prices appear for every symbol ...
                page.wait_for_selector("#prices tr[data-symbol='ETH/USDT']", timeout=30_000)
                # each symbol's liveness is shown (issue 17): the demo's feed is live
                page.wait_for_selector("#prices tr[data-status='live'] .pill.live", timeout=30_000)
                first = int(page.evaluate("document.body.dataset.prices"))
                # ... and keep updating.
                page.wait_for_function(
                    f"Number(document.body.dataset.prices) > {first + 5}", timeout=30_000
                )
                assert page.inner_text("#prices tr[data-symbol='AAPL'] td:nth-child(2)")
                # The chart draws candles: 1 s candles, so a few seconds give several.
                page.wait_for_function("Number(document.body.dataset.candles) >= 3", timeout=30_000)
                assert page.locator("#chart canvas").count() > 0
                page.wait_for_selector("#health tr[data-provider]", timeout=30_000)
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                # A second tab (a second viewer) is live too, and the first keeps going: both
                # subscribe with the id "prices", which once left the second with nothing.
                tab2 = browser.new_page(viewport={"width": 1280, "height": 1000})
                tab2.on("pageerror", lambda exc: errors.append(str(exc)))
                tab2.goto(f"{up.gateway_url}/?symbol=ETH/USDT&interval=1s")
                tab2.wait_for_function("document.body.dataset.ws === 'open'", timeout=20_000)
                tab2.wait_for_function("Number(document.body.dataset.prices) > 5", timeout=30_000)
                tab2.wait_for_function("Number(document.body.dataset.candles) >= 2", timeout=30_000)
                now = int(page.evaluate("document.body.dataset.prices"))
                page.wait_for_function(
                    f"Number(document.body.dataset.prices) > {now + 3}", timeout=30_000
                )
                assert errors == [], errors
            finally:
                browser.close()
