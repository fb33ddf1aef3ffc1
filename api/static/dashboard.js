// sigflow dashboard: REST for history, the SSE live stream for everything after.
// Plain JS, no build step. The API key comes from `?api_key=` once (kept for the tab)
// or the form; it is sent as X-API-Key on fetches and as ?api_key= on the EventSource.
"use strict";

const INTERVAL_MS = { "1m": 60e3, "5m": 300e3, "1h": 3600e3 };
const OVERLAYS = { ema_12: "#f5c542", ema_26: "#c678dd", bb_upper: "#4aa3ff", bb_middle: "#4aa3ff88", bb_lower: "#4aa3ff" };
const MAX_ITEMS = 30;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("api_key")) sessionStorage.setItem("sigflow_api_key", params.get("api_key"));
let apiKey = sessionStorage.getItem("sigflow_api_key") || "";

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + kind;
}

async function api(path) {
  const response = await fetch(path, { headers: apiKey ? { "X-API-Key": apiKey } : {} });
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("an API key is needed");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || response.statusText);
  }
  return response.json();
}

// ---- prices ---------------------------------------------------------------------

const shownPrices = new Map(); // symbol -> last shown price, for the up/down colour
let pricesDue = null;

function formatPrice(value) {
  return value.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: value < 10 ? 6 : 2 });
}

function formatAge(ms) {
  if (ms < 1e3) return ms + " ms";
  if (ms < 60e3) return (ms / 1e3).toFixed(1) + " s";
  if (ms < 3600e3) return Math.round(ms / 60e3) + " min";
  if (ms < 86400e3) return Math.round(ms / 3600e3) + " h";
  return Math.round(ms / 86400e3) + " d";
}

function renderPrices(rows) {
  const body = $("prices").querySelector("tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = row.symbol;
    const previous = shownPrices.get(row.symbol);
    const direction = previous === undefined || previous === row.price ? "" : row.price > previous ? "up" : "down";
    shownPrices.set(row.symbol, row.price);
    const cells = [row.symbol, formatPrice(row.price), row.spread_bps.toFixed(1) + " bp"];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = "price " + direction;
      tr.append(td);
    });
    const exchanges = document.createElement("td");
    exchanges.className = "exchanges";
    for (const e of row.exchanges) {
      const span = document.createElement("span");
      span.textContent = `${e.exchange} ${formatPrice(e.price)} · ${formatAge(e.age_ms)} ago`;
      if (!e.included) span.className = "excluded";
      exchanges.append(span);
      addSeriesOption(e.exchange, row.symbol);
    }
    tr.append(exchanges);
    body.append(tr);
  }
  $("prices-empty").hidden = rows.length > 0;
}

async function refreshPrices() {
  pricesDue = null;
  try {
    renderPrices(await api("/v1/prices/latest"));
  } catch (err) {
    setStatus(err.message, "error");
  }
}

function schedulePrices() {
  if (pricesDue === null) pricesDue = setTimeout(refreshPrices, 500);
}

// ---- chart ----------------------------------------------------------------------

const chart = LightweightCharts.createChart($("chart"), {
  autoSize: true,
  layout: { background: { color: "#171e26" }, textColor: "#d8dee6" },
  grid: { vertLines: { color: "#1f2833" }, horzLines: { color: "#1f2833" } },
  timeScale: { timeVisible: true, secondsVisible: false },
});
const candleSeries = chart.addSeries(LightweightCharts.CandlestickSeries, {
  upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
});
const overlaySeries = {};
for (const [name, color] of Object.entries(OVERLAYS)) {
  overlaySeries[name] = chart.addSeries(LightweightCharts.LineSeries, {
    color, lineWidth: name.startsWith("bb_") ? 1 : 2, priceLineVisible: false, lastValueVisible: false,
    crosshairMarkerVisible: false, lineStyle: name === "bb_middle" ? 2 : 0,
  });
}

let current = null; // {exchange, symbol, interval}
let bars = new Map(); // time (s) -> bar; closed candles and the forming one
let overlayPoints = {};
let closedCount = 0;

function barOf(candle) {
  return { time: candle.open_time / 1000, open: candle.open, high: candle.high, low: candle.low, close: candle.close };
}

function drawBars() {
  const sorted = [...bars.values()].sort((a, b) => a.time - b.time);
  candleSeries.setData(sorted);
  $("candle-count").textContent = `${closedCount} candles` + (sorted.length > closedCount ? " + forming" : "");
}

function drawOverlays() {
  for (const [name, series] of Object.entries(overlaySeries)) {
    const points = [...(overlayPoints[name] || new Map()).entries()].sort((a, b) => a[0] - b[0]);
    series.setData(points.map(([time, value]) => ({ time, value })));
  }
}

function addIndicators(point) {
  for (const [name, value] of Object.entries(point.values)) {
    if (!(name in OVERLAYS)) continue;
    (overlayPoints[name] ||= new Map()).set(point.open_time / 1000, value);
  }
}

function isCurrent(event) {
  return current && event.exchange === current.exchange && event.symbol === current.symbol;
}

async function loadChart() {
  const [exchange, symbol] = $("series").value.split(":");
  if (!symbol) return;
  const interval = $("interval").value;
  current = { exchange, symbol, interval };
  followChart(symbol);
  bars = new Map();
  overlayPoints = {};
  closedCount = 0;
  const known = symbolsSeen.get(`${exchange}:${symbol}`);
  const start = known ? Math.max(0, known.last_seen - 300 * INTERVAL_MS[interval]) : Date.now() - 300 * INTERVAL_MS[interval];
  const query = new URLSearchParams({ exchange, symbol, interval, start, limit: 1000 });
  try {
    const candles = await api(`/v1/candles?${query}`);
    for (const candle of candles) bars.set(candle.open_time / 1000, barOf(candle));
    closedCount = candles.length;
    for (const name of Object.keys(OVERLAYS)) query.append("name", name);
    for (const point of await api(`/v1/indicators?${query}`)) addIndicators(point);
  } catch (err) {
    setStatus(err.message, "error");
  }
  drawBars();
  drawOverlays();
  chart.timeScale().fitContent();
}

function onCandle(candle) {
  if (!isCurrent(candle) || candle.interval !== current.interval) return;
  const time = candle.open_time / 1000;
  if (!bars.has(time) || bars.get(time).forming) closedCount += 1;
  bars.set(time, barOf(candle));
  drawBars();
}

function onIndicators(point) {
  if (!isCurrent(point) || point.interval !== current.interval) return;
  addIndicators(point);
  drawOverlays();
}

function onPrice(trade) {
  schedulePrices();
  addSeriesOption(trade.exchange, trade.symbol);
  if (!isCurrent(trade)) return;
  const length = INTERVAL_MS[current.interval];
  const time = Math.floor(trade.ts / length) * length / 1000;
  const bar = bars.get(time);
  if (bar && !bar.forming) return; // that window already closed
  const times = [...bars.keys()];
  if (times.length && time < Math.max(...times)) return; // an old trade
  bars.set(time, bar
    ? { ...bar, high: Math.max(bar.high, trade.price), low: Math.min(bar.low, trade.price), close: trade.price }
    : { time, open: trade.price, high: trade.price, low: trade.price, close: trade.price, forming: true });
  drawBars();
}

// ---- series selector ------------------------------------------------------------

const symbolsSeen = new Map();

function addSeriesOption(exchange, symbol) {
  const value = `${exchange}:${symbol}`;
  const select = $("series");
  if ([...select.options].some((o) => o.value === value)) return;
  select.append(new Option(`${symbol} · ${exchange}`, value));
  if (select.options.length === 1) loadChart();
}

async function loadSymbols() {
  try {
    for (const s of await api("/v1/symbols")) {
      symbolsSeen.set(`${s.exchange}:${s.symbol}`, s);
      addSeriesOption(s.exchange, s.symbol);
    }
  } catch (err) {
    setStatus(err.message, "error");
  }
}

// ---- signals and anomalies ------------------------------------------------------

function timeText(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function prepend(listId, key, build) {
  const list = $(listId);
  if (list.querySelector(`[data-key="${CSS.escape(key)}"]`)) return;
  list.querySelector(".empty")?.remove();
  const li = build();
  li.dataset.key = key;
  list.prepend(li);
  while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
}

function item(headParts, why) {
  const li = document.createElement("li");
  const head = document.createElement("div");
  head.className = "head";
  for (const [text, cls] of headParts) {
    const span = document.createElement("span");
    span.textContent = text;
    if (cls) span.className = cls;
    head.append(span);
  }
  const explanation = document.createElement("div");
  explanation.className = "why";
  explanation.textContent = why;
  li.append(head, explanation);
  return li;
}

function onSignal(s) {
  const key = [s.exchange, s.symbol, s.interval, s.open_time, s.rule].join("|");
  prepend("signals", key, () => item([
    [s.direction > 0 ? "▲ bullish" : "▼ bearish", "what " + (s.direction > 0 ? "bull" : "bear")],
    [`${s.symbol} · ${s.exchange} · ${s.interval}`, ""],
    [s.rule, "muted"],
    [`strength ${s.strength.toFixed(2)}`, "muted"],
    [timeText(s.open_time), "muted"],
  ], s.explanation));
}

function onAnomaly(a) {
  prepend("anomalies", a.anomaly_id, () => item([
    [a.kind.replace("_", " "), "what sev-" + a.severity],
    [a.severity, "sev-" + a.severity],
    [a.subject, ""],
    [`score ${a.score.toFixed(1)}`, "muted"],
    [timeText(a.ts), "muted"],
  ], a.explanation));
}

async function loadEvents() {
  try {
    (await api("/v1/signals?limit=20")).reverse().forEach(onSignal);
  } catch (err) {
    setStatus(err.message, "error");
  }
  // The anomalies route may not exist on this server: the stream snapshot fills the list.
  api("/v1/anomalies?limit=20").then((rows) => rows.reverse().forEach(onAnomaly), () => {});
}

// ---- live stream ----------------------------------------------------------------

// Prices, signals and anomalies of every symbol; candles and indicators only of the
// charted symbol (its own subscription, renewed when the series changes), so a
// processor's burst of other series' candles cannot overflow the page's stream.
const LIVE_TOPICS = "prices,signals,anomalies";
const CHART_TOPICS = "candles,indicators";

let liveSource = null;
let chartSource = null;
let chartSymbol = null;

// An SSE subscription whose `resync` runs when it is back after breaking off (the server
// drops a client that falls behind a burst, or the connection failed), to fetch what it
// missed meanwhile over REST.
function subscribe(topics, { symbols = "", snapshot = false, handlers, resync }) {
  const query = new URLSearchParams({ topics, snapshot: String(snapshot) });
  if (symbols) query.set("symbols", symbols);
  if (apiKey) query.set("api_key", apiKey);
  const source = new EventSource(`/v1/stream/sse?${query}`);
  let missedEvents = false;
  for (const [topic, handle] of Object.entries(handlers)) {
    source.addEventListener(topic, (e) => handle(JSON.parse(e.data).data));
  }
  source.addEventListener("subscribed", () => {
    setStatus("live", "live");
    if (missedEvents) {
      missedEvents = false;
      resync();
    }
  });
  source.addEventListener("dropped", (e) => {
    missedEvents = true;
    setStatus("dropped: " + JSON.parse(e.data).reason, "error");
  });
  source.onerror = () => {
    missedEvents = true;
    setStatus("reconnecting…", "connecting");
  };
  return source;
}

function connect() {
  if (liveSource) liveSource.close();
  liveSource = subscribe(LIVE_TOPICS, {
    snapshot: true,
    handlers: { prices: onPrice, signals: onSignal, anomalies: onAnomaly },
    resync: refreshPrices,
  });
}

function followChart(symbol) {
  if (chartSource && chartSymbol === symbol) return;
  if (chartSource) chartSource.close();
  chartSymbol = symbol;
  chartSource = subscribe(CHART_TOPICS, {
    symbols: symbol,
    handlers: { candles: onCandle, indicators: onIndicators },
    resync: loadChart,
  });
}

$("series").addEventListener("change", loadChart);
$("interval").addEventListener("change", loadChart);
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = $("key-input").value.trim();
  sessionStorage.setItem("sigflow_api_key", apiKey);
  $("key-form").hidden = true;
  if (chartSource) chartSource.close();
  chartSource = null; // opened again, with the key, by loadChart
  start().then(loadChart);
});

async function start() {
  await loadSymbols();
  await Promise.all([refreshPrices(), loadEvents()]);
  connect();
}

start();
