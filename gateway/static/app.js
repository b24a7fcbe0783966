// FIML Stream dashboard: plain JS over the public protocol (docs/WEBSOCKET.md).
// One WebSocket carries two subscriptions: conflated prices for the table, and every candle
// revision (mode "realtime") of the chosen symbol and interval for the chart. History for the
// chart comes from GET /ohlcv/{symbol}; live revisions then update the last candle in place.
"use strict";

const state = {
  symbols: [],
  ws: null,
  retryMs: 500,
  chartSub: null,     // subscription_id of the current candle subscription
  chartGen: 0,        // bumps on every symbol/interval change, so late replies are ignored
  chartReady: -1,     // the chartGen whose history is loaded (live updates may follow)
  candles: new Map(), // window start (s) -> candle, for the chosen symbol and interval
  prices: 0,
  rows: new Map(),    // symbol -> <tr>
};

const $ = (sel) => document.querySelector(sel);
const fmt = (x, digits = 6) =>
  Number(x).toLocaleString(undefined, { maximumSignificantDigits: digits });
const hms = (ms) => new Date(ms).toISOString().slice(11, 23);
const toUrl = (s) => s.replace("/", "_").replace("^", "~");

function setStatus(text, cls) {
  const el = $("#status");
  el.textContent = text;
  el.className = "pill " + cls;
  document.body.dataset.ws = cls;
}

// ---- price table ---------------------------------------------------------------------------

function priceRow(symbol) {
  let tr = state.rows.get(symbol);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.symbol = symbol;
    tr.innerHTML = "<td></td>" + '<td class="num"></td>'.repeat(4) + "<td></td>".repeat(4);
    tr.cells[0].textContent = symbol;
    const rows = [...state.rows.keys(), symbol].sort();
    const body = $("#prices tbody");
    const next = state.rows.get(rows[rows.indexOf(symbol) + 1]);
    body.insertBefore(tr, next || null);
    state.rows.set(symbol, tr);
  }
  return tr;
}

function onPrice(p) {
  const tr = priceRow(p.symbol);
  const before = Number(tr.dataset.price || p.price);
  tr.dataset.price = p.price;
  const c = tr.cells;
  c[1].textContent = fmt(p.price, 8);
  c[1].className = "num " + (p.price > before ? "up flash-up" : p.price < before ? "down flash-down" : "");
  // change since the UTC day's open (the 1d candle's open), as the seed's clients show it
  c[2].textContent = `${p.change_percent >= 0 ? "+" : ""}${p.change_percent.toFixed(2)}%`;
  c[2].className = "num " + (p.change_percent > 0 ? "up" : p.change_percent < 0 ? "down" : "");
  c[2].title = `${fmt(p.change)} since the UTC day's open ${fmt(p.day_open, 8)}`;
  c[3].innerHTML = `<span class="conf"><i style="width:${(p.confidence * 100).toFixed(0)}%"></i></span>`;
  c[3].append(p.confidence.toFixed(2));
  c[3].title = `the truth is within 2 bp of ${fmt(p.price, 8)} with probability ${p.confidence.toFixed(2)}`;
  c[4].textContent = `${fmt(p.band_low)} – ${fmt(p.band_high)}`;
  // the provider nearest the consensus first
  c[5].textContent = [p.provider, ...p.providers_used.filter((x) => x !== p.provider)].join(", ");
  c[6].textContent = (p.providers_rejected || []).join(", ");
  c[7].textContent = (p.flags || []).join(", ");
  c[8].textContent = p.timestamp.slice(11, 23);
  state.prices += 1;
  document.body.dataset.prices = String(state.prices);
}

// A symbol's liveness (docs/WEBSOCKET.md, "Liveness"): live, stale (no price for twice its
// expected interval: a dead feed, not a quiet market) or recovering; providers marked down.
function onStatus(st) {
  const tr = priceRow(st.symbol);
  tr.dataset.status = st.status;
  const down = Object.entries(st.providers || {}).filter(([, s]) => s === "down").map(([p]) => p);
  const badge = document.createElement("span");
  badge.className = "pill " + st.status;
  badge.textContent = st.status;
  badge.title = (st.last_event_time_ms ? `last price ${hms(st.last_event_time_ms)} UTC` : "no price yet")
    + (st.expected_interval_ms ? `, expected every ${st.expected_interval_ms} ms` : "")
    + (down.length ? `; down: ${down.join(", ")}` : "");
  tr.cells[0].replaceChildren(st.symbol + " ", badge);
}

// ---- candlestick chart ---------------------------------------------------------------------

let chart = null;
let series = null;

function initChart() {
  if (!window.LightweightCharts) {
    $("#chart-missing").hidden = false;
    return;
  }
  const { createChart, CandlestickSeries } = window.LightweightCharts;
  chart = createChart($("#chart"), {
    autoSize: true,
    layout: { background: { color: "#161c23" }, textColor: "#d8dee9" },
    grid: { vertLines: { color: "#202833" }, horzLines: { color: "#202833" } },
    timeScale: { timeVisible: true, secondsVisible: true },
  });
  series = chart.addSeries(CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a",
    wickDownColor: "#ef5350", borderVisible: false,
  });
}

function toBar(c) {
  return { time: c.window_start_ms / 1000, open: c.open, high: c.high, low: c.low, close: c.close };
}

function onCandle(c, gen) {
  if (gen !== state.chartGen || !series) return;
  if (c.symbol !== $("#chart-symbol").value || c.interval !== $("#chart-interval").value) return;
  const bar = toBar(c);
  const last = [...state.candles.keys()].pop();
  state.candles.set(bar.time, bar);
  if (last === undefined || bar.time >= last) {
    series.update(bar); // the open candle, or a new one
  } else {
    // A revision of an older window (late tick within grace): redraw all, in order.
    series.setData([...state.candles.values()].sort((a, b) => a.time - b.time));
  }
  document.body.dataset.candles = String(state.candles.size);
  $("#chart-info").textContent = `${state.candles.size} candles, last ${hms(c.event_time_ms)}`;
}

async function loadChart() {
  const gen = ++state.chartGen;
  const symbol = $("#chart-symbol").value;
  const interval = $("#chart-interval").value;
  if (state.chartSub && state.ws && state.ws.readyState === WebSocket.OPEN) {
    send({ type: "unsubscribe", subscription_id: state.chartSub });
  }
  state.chartSub = null;
  state.candles = new Map();
  document.body.dataset.candles = "0";
  if (series) series.setData([]);
  try {
    let res = await fetch(`/ohlcv/${toUrl(symbol)}?interval=${interval}`);
    // 503 + Retry-After: the gateway's candle index is still being built (it just started);
    // ask again as told, while this chart is still the one shown, for up to a minute.
    for (let tries = 0; res.status === 503 && tries < 30 && gen === state.chartGen; tries++) {
      const wait = Math.min(5, Math.max(0.5, Number(res.headers.get("Retry-After")) || 1));
      await new Promise((done) => setTimeout(done, wait * 1000));
      res = await fetch(`/ohlcv/${toUrl(symbol)}?interval=${interval}`);
    }
    if (res.ok && gen === state.chartGen) {
      const body = await res.json();
      for (const c of body.candles) state.candles.set(c.window_start_ms / 1000, toBar(c));
      if (series) series.setData([...state.candles.values()]);
      document.body.dataset.candles = String(state.candles.size);
    }
  } catch (err) {
    console.warn("candle history unavailable", err);
  }
  if (gen !== state.chartGen) return;
  state.chartReady = gen;
  subscribeChart(gen);
}

function subscribeChart(gen) {
  // Called by loadChart (after history) and on (re)connect; only once per chart choice.
  if (state.chartReady !== gen || state.chartSub !== null) return;
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.chartSub = `chart-${gen}`;
  send({
    type: "subscribe", subscription_id: state.chartSub, stream_type: "ohlcv",
    symbols: [$("#chart-symbol").value], params: { interval: $("#chart-interval").value },
    mode: "realtime", snapshot: true,
  });
}

// ---- WebSocket -----------------------------------------------------------------------------

function send(message) {
  state.ws.send(JSON.stringify(message));
}

function connect() {
  // Where the gateway wants credentials, open the page as /?token=<key or JWT>: browsers
  // cannot set headers on a WebSocket, so the token rides in the query (docs/SECURITY.md).
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/stream${query}`;
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => {
    state.retryMs = 500;
    setStatus("live", "open");
    send({
      type: "subscribe", subscription_id: "prices", stream_type: "price",
      symbols: state.symbols, interval_ms: 250, snapshot: true, status: true,
    });
    subscribeChart(state.chartGen);
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "data" && msg.stream_type === "price") {
      msg.data.forEach(onPrice);
    } else if (msg.type === "data" && msg.stream_type === "ohlcv") {
      if (msg.subscription_id === state.chartSub) msg.data.forEach((c) => onCandle(c, state.chartGen));
    } else if (msg.type === "status") {
      onStatus(msg);
    } else if (msg.type === "error") {
      console.warn("gateway error", msg.error_code, msg.message);
    }
  };
  ws.onclose = () => {
    setStatus("reconnecting…", "closed");
    state.chartSub = null;
    // Back off so a restarting gateway is not hammered; one retry a few seconds at most.
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 5000);
  };
}

// ---- provider health -----------------------------------------------------------------------

async function refreshHealth() {
  try {
    const res = await fetch("/providers/health");
    if (!res.ok) return;
    const body = $("#health tbody");
    body.replaceChildren();
    for (const h of (await res.json()).providers) {
      const tr = body.insertRow();
      tr.dataset.provider = h.provider;
      const cells = [
        h.provider, h.state,
        h.reliability == null ? "" : h.reliability.toFixed(2),
        h.error_bps == null ? "" : h.error_bps.toFixed(1),
        h.staleness_ms == null ? "" : fmt(h.staleness_ms, 6),
        hms(h.event_time_ms), h.reason || "",
      ];
      cells.forEach((text, i) => {
        const td = tr.insertCell();
        td.textContent = text;
        if (i >= 2 && i <= 4) td.className = "num";
      });
      tr.cells[1].className = h.state;
    }
  } catch (err) {
    console.warn("provider health unavailable", err);
  }
}

// ---- start ---------------------------------------------------------------------------------

async function main() {
  const params = new URLSearchParams(location.search);
  const config = await (await fetch("/dashboard/config")).json();
  state.symbols = (params.get("symbols") || config.symbols.join(",")).split(",").filter(Boolean);
  const select = $("#chart-symbol");
  for (const s of state.symbols) select.add(new Option(s, s));
  if (params.get("symbol")) select.value = params.get("symbol");
  if (params.get("interval")) $("#chart-interval").value = params.get("interval");
  select.onchange = loadChart;
  $("#chart-interval").onchange = loadChart;
  initChart();
  connect();
  loadChart();
  refreshHealth();
  setInterval(refreshHealth, 3000);
}

main();
