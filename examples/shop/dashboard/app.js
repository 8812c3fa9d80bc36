// The shop's live dashboard: the current state from the gateway's HTTP API, then the live events
// of one websocket to /ws. No build step; the charts are plotly.js, which the gateway serves from
// the plotly package (GET /vendor/plotly.min.js: no CDN, no copy in the repository).
//
// Protocol (adapters/websocket): send {"op": "subscribe", "channels": [...], "since"?: cursor};
// receive {"type": "event", "channel": c, "event": {"topic": t, "data": {...}}, "cursor"?: ...}.
// A frame's cursor (servers that can resume) is remembered and sent back as "since" when the
// page subscribes again, so a resuming server replays what was missed (the state is not loaded
// again; a {"type": "recovery_failed"} answer makes the page load it); without a cursor seen,
// "since" is left out and every (re)subscribe loads the state. The token travels as ?token= (browsers cannot set headers on a websocket). A channel
// the token's scopes do not allow closes the connection with 4403, so only the allowed channels
// are asked for; a bad or expired token closes it with 4401 (not retried: log in again).
//
// On open (and after every reconnect) the page loads GET /orders, GET /inventory, GET /logs/stats
// and GET /logs/alerts, then applies the live events on top: rows are keyed by order / product id,
// chart points by (source, window), alerts by their content, so nothing is shown twice.
"use strict";

// channel -> scope needed (examples/shop/auth.py CHANNEL_SCOPES)
const CHANNEL_SCOPES = {
  orders: "notifications:read",
  inventory: "notifications:read",
  stock: "notifications:read",
  logs: "logs:read",
  alerts: "logs:read",
};
const MAX_ORDERS = 100;
const MAX_STOCK = 200;
const MAX_ALERTS = 50;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
// reconnect: 0.5 s doubling up to 30 s, each delay drawn in [50 %, 150 %] of it (jitter)
const BACKOFF_FIRST_S = 0.5;
const BACKOFF_MAX_S = 30;
// close codes after which connecting again cannot help
const FINAL_CLOSES = {
  4401: "bad or expired token: log in again or paste a new token",
  4403: "a channel is not allowed for this token",
};
const CLOSE_REASONS = { 1001: "server going away", 1006: "connection lost", 1011: "server error", 1013: "too slow" };
const STATUS_RANK = { created: 0, applied: 1, rejected: 1 };

const $ = (id) => document.getElementById(id);
const state = {
  token: null,
  socket: null,
  attempt: 0,            // failed connections in a row (the backoff's exponent)
  reconnects: 0,         // reconnections scheduled since the page opened
  recoveryFailed: 0,     // recovery_failed answers (a cursor the server could not honour)
  retryTimer: null,
  countdown: null,
  cursor: undefined,     // the last frame.cursor seen (a resuming server's position)
  loaded: false,         // the state was loaded once (a resubscribe with "since" may skip it)
  orders: new Map(),     // order_id -> row
  ordersTotal: null,     // orders the order query service holds (GET /orders), + live ones
  stock: new Map(),      // product_id -> row
  stockLive: new Set(),  // products changed by a live event while the stock was loading
  stockLoading: false,
  stockInfo: null,       // {total, low, threshold} of GET /inventory
  series: new Map(),     // source -> Map(window_start_s -> error_rate)
  alertKeys: new Set(),
  alertsReceived: 0,
  alertsTruncated: false,
  chartPending: null,
};

function scopesOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload + "=".repeat((4 - (payload.length % 4)) % 4)));
    return new Set(String(claims.scope || "").split(" ").filter(Boolean));
  } catch (e) {
    return new Set();
  }
}

function setStatus(text, stateName) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = stateName;
}

// ------------------------------------------------------------------ the websocket, reconnecting

function clearRetry() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdown);
  state.retryTimer = state.countdown = null;
}

// Connect with a token the user gave (a new start: the backoff and the cursor are reset).
function start(token) {
  clearRetry();
  if (token !== state.token) state.cursor = undefined;
  state.token = token;
  state.attempt = 0;
  open();
}

function open() {
  const token = state.token;
  if (state.socket) {
    const old = state.socket;
    state.socket = null;
    old.close(1000, "reconnecting");
  }
  const scopes = scopesOf(token);
  const channels = Object.keys(CHANNEL_SCOPES).filter((c) => scopes.has(CHANNEL_SCOPES[c]));
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  const socket = new WebSocket(url);
  state.socket = socket;
  setStatus(state.attempt ? `connecting (attempt ${state.attempt + 1})` : "connecting", "connecting");
  let resuming = false;
  socket.onopen = () => {
    const subscribe = { op: "subscribe", channels };
    if (state.cursor !== undefined && state.loaded) {
      subscribe.since = state.cursor;
      resuming = true;
    }
    socket.send(JSON.stringify(subscribe));
  };
  socket.onmessage = (message) => {
    if (state.socket !== socket) return;
    const frame = JSON.parse(message.data);
    if (frame.cursor !== undefined && frame.cursor !== null) state.cursor = frame.cursor;
    if (frame.type === "subscribed") {
      state.attempt = 0;
      setStatus((resuming ? "connected (resumed): " : "connected: ") + frame.channels.join(", "), "connected");
      // resuming: the server sends what was missed after the cursor, nothing to load again
      if (!resuming) loadState(token, scopes);
    } else if (frame.type === "recovery_failed") {
      // the server cannot resume from our cursor: load the current state again
      resuming = false;
      state.recoveryFailed += 1;
      setStatus("connected: " + channels.join(", ") + ` (not resumed: ${frame.reason || "cursor refused"})`, "connected");
      loadState(token, scopes);
    } else if (frame.type === "event") {
      onEvent(frame.channel, frame.event);
    } else if (frame.type === "error") {
      setStatus("error: " + frame.error, "closed");
    }
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    const reason = event.reason || CLOSE_REASONS[event.code] || "";
    const final = FINAL_CLOSES[event.code];
    if (final) {
      setStatus(`closed ${event.code}: ${reason ? reason + " — " : ""}${final}; not reconnecting`, "closed");
      return;
    }
    scheduleReconnect(`closed ${event.code}${reason ? " " + reason : ""}`);
  };
}

function scheduleReconnect(why) {
  const base = Math.min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** state.attempt);
  const delay = base * (0.5 + Math.random());
  state.attempt += 1;
  state.reconnects += 1;
  const due = Date.now() + delay * 1000;
  const show = () => {
    const left = Math.max(0, (due - Date.now()) / 1000);
    setStatus(`reconnecting in ${left.toFixed(left < 10 ? 1 : 0)} s (${why})`, "reconnecting");
  };
  clearRetry();
  show();
  state.countdown = setInterval(show, 200);
  state.retryTimer = setTimeout(() => {
    clearRetry();
    open();
  }, delay * 1000);
}

// ------------------------------------------------------------------ the current state (HTTP)

// The API's own words for a failed request: a 422's "message" (or its field errors), an
// HTTPException's "detail" string, else the status text.
function problemText(response, body) {
  if (body && typeof body.message === "string" && body.message) return body.message;
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d.loc || []).filter((part) => part !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return response.statusText || "request failed";
}

// GET path with the token; the JSON body, or an Error whose message says what went wrong.
async function getJson(path, token) {
  let response;
  try {
    response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  } catch (err) {
    throw new Error(`GET ${path}: the gateway cannot be reached (${err.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`GET ${path} failed (${response.status}): ${problemText(response, body)}`);
  return body;
}

function panelError(id, text) {
  $(id).textContent = text || "";
}

function loadState(token, scopes) {
  state.loaded = true;
  document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  const need = (scope, panel, what) => {
    if (scopes.has(scope)) return true;
    panelError(panel, `${what} not loaded: the token lacks the scope ${scope}`);
    return false;
  };
  if (need("orders:read", "orders-error", "the latest orders")) loadOrders(token);
  if (need("inventory:read", "stock-error", "the stock")) loadStock(token);
  if (need("logs:read", "logs-error", "the log history")) loadHistory(token);
}

async function loadOrders(token) {
  try {
    const body = await getJson(`orders?limit=${MAX_ORDERS}`, token);
    panelError("orders-error", body.missing && body.missing.length
      ? `outcomes not known: ${Object.entries(body.errors || {}).map(([k, v]) => `${k}: ${v}`).join("; ")}` : "");
    state.ordersTotal = Math.max(body.total, state.ordersTotal || 0);
    // oldest first: each row is put on top, so the newest ends first
    for (const order of [...body.orders].reverse()) {
      const outcome = order.outcome;
      const status = !outcome ? "created"
        : outcome.status === "rejected" ? "rejected: " + (outcome.reason || "") : outcome.status;
      const when = order.created_at ? new Date(order.created_at) : new Date(order.received_at * 1000);
      orderRow(order.order_id, order, status, when, false);
    }
    ordersSummary();
  } catch (err) {
    panelError("orders-error", err.message);
  }
}

async function loadStock(token) {
  state.stockLive.clear();
  state.stockLoading = true;
  try {
    const page = await getJson(`inventory?limit=${MAX_STOCK}&order=recent`, token);
    panelError("stock-error", "");
    state.stockInfo = { total: page.total, low: page.low, threshold: page.threshold };
    for (const item of page.items) {
      if (!state.stockLive.has(item.product_id)) stockRow(item.product_id, item.stock, item.low, false);
    }
    stockSummary();
  } catch (err) {
    panelError("stock-error", err.message);
  } finally {
    state.stockLoading = false;
  }
}

// What happened before the page connected: GET /logs/stats and /logs/alerts (then live events).
async function loadHistory(token) {
  const [stats, alerts] = await Promise.allSettled([
    getJson("logs/stats?limit=1000", token), getJson("logs/alerts?limit=" + MAX_ALERTS, token),
  ]);
  const errors = [stats, alerts].filter((r) => r.status === "rejected").map((r) => r.reason.message);
  panelError("logs-error", errors.join("; "));
  if (stats.status === "fulfilled") {
    for (const s of stats.value) addPoint(s.source, s.window_start_s, s.error_rate, false);
    drawChart();
  }
  if (alerts.status === "fulfilled") {
    if (alerts.value.length >= MAX_ALERTS) state.alertsTruncated = true;
    for (const a of alerts.value) addAlert(a);
  }
}

// ------------------------------------------------------------------ live events

function onEvent(channel, event) {
  const data = event.data || {};
  switch (event.topic) {
    case "order.created":
      if (!state.orders.has(data.order_id) && state.ordersTotal !== null) state.ordersTotal += 1;
      orderRow(data.order_id, data, "created", data.created_at ? new Date(data.created_at) : new Date());
      return ordersSummary();
    case "order.rejected": return orderRow(data.order_id, data, "rejected: " + (data.reason || ""));
    case "inventory.updated":
      orderRow(data.order_id, data, "applied");
      for (const item of data.items || []) stockRow(item.product_id, item.remaining, null, true);
      return;
    case "stock.low": return stockRow(data.product_id, data.remaining, true, true);
    case "log.stats": return addPoint(data.source, data.window_start_s, data.error_rate);
    case "log.alert": return addAlert(data);
  }
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function orderRow(orderId, data, status, when, live = true) {
  if (!orderId) return;
  let row = state.orders.get(orderId);
  const tbody = $("orders").tBodies[0];
  if (!row) {
    row = document.createElement("tr");
    row.dataset.orderId = orderId;
    row.dataset.status = "";
    // "2×\u00a0<product>": a line breaks between items, not inside one
    const items = (data.items || []).map((i) => `${i.quantity}×\u00a0${String(i.product_id).slice(0, 8)}`).join(", ");
    const time = when || new Date();
    const today = time.toDateString() === new Date().toDateString();
    const timeCell = cell(today ? time.toLocaleTimeString() : time.toLocaleString(), "time");
    timeCell.title = time.toISOString();
    const idCell = cell(orderId.slice(0, 8), "mono nowrap");
    idCell.title = orderId;
    row.append(timeCell, idCell, cell(items, "items"), cell(status, "status-cell"));
    tbody.prepend(row);
    state.orders.set(orderId, row);
    while (tbody.rows.length > MAX_ORDERS) {
      const last = tbody.rows[tbody.rows.length - 1];
      state.orders.delete(last.dataset.orderId);
      last.remove();
    }
  }
  const name = status.split(":")[0];
  // a snapshot or a redelivered event never takes an order back (applied -> created)
  if (row.dataset.status && STATUS_RANK[name] < STATUS_RANK[row.dataset.status]) return;
  row.cells[3].textContent = status;
  row.className = name;
  row.dataset.status = name;
  if (!live) row.dataset.loaded = "true";
  $("orders-count").textContent = String(state.orders.size);
}

function ordersSummary() {
  const shown = state.orders.size;
  $("orders-summary").textContent = state.ordersTotal === null
    ? `${shown} orders since the page connected.`
    : state.ordersTotal === 0 ? "No orders yet: new ones appear here live."
    : `The latest ${shown} of ${state.ordersTotal.toLocaleString()} orders, newest first, then the live ones.`;
}

// low: true / false, or null to decide by the threshold GET /inventory told (else leave it)
function stockRow(productId, remaining, low, live) {
  if (!productId) return;
  if (live && state.stockLoading) state.stockLive.add(productId);
  let row = state.stock.get(productId);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.productId = productId;
    row.append(cell(productId, "mono"), cell(""));
    const tbody = $("stock").tBodies[0];
    if (live) tbody.prepend(row); else tbody.append(row);
    state.stock.set(productId, row);
  } else if (live) {
    row.parentNode.prepend(row);  // the products sold last come first, as GET /inventory?order=recent
  }
  row.cells[1].textContent = String(remaining);
  if (low === null && state.stockInfo) low = remaining < state.stockInfo.threshold;
  if (low !== null) row.classList.toggle("low", low);
  row.dataset.low = row.classList.contains("low") ? "true" : "false";
  $("stock-count").textContent = String(state.stock.size);
  if (live) stockSummary();
}

function stockSummary() {
  const info = state.stockInfo;
  if (!info) return;
  const low = $("stock").querySelectorAll("tr.low").length;
  $("stock-summary").textContent = `${state.stock.size} of ${info.total.toLocaleString()} products, the ones sold last `
    + `first. Low (red: fewer than ${info.threshold} units): ${info.low.toLocaleString()} products when loaded, `
    + `${low} of them shown.`;
}

// ------------------------------------------------------------------ the error-rate chart (plotly.js)

function addPoint(source, windowStart, errorRate, draw = true) {
  if (!source || typeof windowStart !== "number") return;
  if (!state.series.has(source)) state.series.set(source, new Map());
  state.series.get(source).set(windowStart, errorRate);
  if (draw) drawChart();
}

// Redraw at most every 300 ms (log.stats arrive in bursts while files are replayed).
function drawChart() {
  if (state.chartPending) return;
  state.chartPending = setTimeout(() => {
    state.chartPending = null;
    renderChart();
  }, 300);
}

// One subplot per source, each with its own time axis (the loghub files cover different years:
// a shared axis would squeeze each source into a sliver), the error rate in %, one legend.
function renderChart() {
  const el = $("error-chart");
  const sources = [...state.series.keys()].sort();
  const legend = $("chart-legend");
  legend.textContent = "";
  let points = 0;
  const traces = [];
  const layout = {
    height: Math.max(1, sources.length) * 170 + 90,
    margin: { l: 52, r: 12, t: 64, b: 28 },
    showlegend: true,
    // at the figure's top, above the first subplot's title (two rows on a narrow screen)
    legend: { orientation: "h", x: 0, xanchor: "left", yref: "container", y: 1, yanchor: "top" },
    grid: { rows: Math.max(1, sources.length), columns: 1, pattern: "independent", ygap: 0.45 },
    hovermode: "x unified",
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    font: { size: 11 },
    annotations: [],
  };
  sources.forEach((source, k) => {
    const values = [...state.series.get(source).entries()].sort((a, b) => a[0] - b[0]);
    const color = COLORS[k % COLORS.length];
    const axis = k === 0 ? "" : String(k + 1);
    traces.push({
      type: "scatter",
      mode: "lines+markers",
      name: source,
      x: values.map(([start]) => new Date(start * 1000).toISOString()),
      y: values.map(([, rate]) => Math.round(rate * 10000) / 100),
      xaxis: "x" + axis,
      yaxis: "y" + axis,
      line: { color, width: 1.5 },
      marker: { size: 4 },
      hovertemplate: `${source}: %{y:.2f} %<extra></extra>`,
    });
    layout["xaxis" + axis] = { type: "date", automargin: true, gridcolor: "#eee" };
    layout.annotations.push({
      text: `<b>${source}</b>`, showarrow: false, xref: `x${axis} domain`, yref: `y${axis} domain`,
      x: 0, y: 1, xanchor: "left", yanchor: "bottom", font: { color },
    });
    layout["yaxis" + axis] = {
      title: { text: "errors %", standoff: 4 }, ticksuffix: " %", rangemode: "tozero", gridcolor: "#eee",
    };
    points += values.length;
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = color;
    const first = values.length ? new Date(values[0][0] * 1000).toISOString().slice(0, 10) : "";
    const last = values.length ? new Date(values[values.length - 1][0] * 1000).toISOString().slice(0, 10) : "";
    li.append(swatch, `${source} (${values.length} windows, ${first === last ? first : first + " … " + last})`);
    legend.append(li);
  });
  el.dataset.points = String(points);
  el.dataset.sources = String(sources.length);
  if (typeof window.Plotly === "undefined") {
    panelError("logs-error", "the chart library did not load (GET vendor/plotly.min.js failed: is the plotly package installed?)");
    return;
  }
  if (!sources.length) {
    layout.annotations = [{ text: "no log stats yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
    layout.xaxis = { type: "date", visible: false };
    layout.yaxis = { visible: false };
  }
  window.Plotly.react(el, traces, layout, { responsive: true, displayModeBar: false });
}

// ------------------------------------------------------------------ alerts

function addAlert(alert) {
  const key = [alert.kind, alert.source, alert.window_start_s ?? alert.window_start, alert.message].join("|");
  if (state.alertKeys.has(key)) return;
  state.alertKeys.add(key);
  const li = document.createElement("li");
  li.textContent = `[${alert.kind}] ${alert.message || alert.source}`;
  li.dataset.kind = alert.kind;
  const list = $("alerts");
  list.prepend(li);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
  state.alertsReceived += 1;
  $("alerts-count").textContent = String(state.alertsReceived);
  const shown = list.children.length;
  const older = state.alertsTruncated ? " (older alerts were not loaded)" : "";
  $("alerts-note").textContent = shown < state.alertsReceived || state.alertsTruncated
    ? `Showing the latest ${shown} of ${state.alertsReceived} alerts received${older}.`
    : `${shown} alerts.`;
}

// ------------------------------------------------------------------ forms

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    setStatus("paste a token or log in first", "closed");
    return;
  }
  sessionStorage.setItem("token", token);
  start(token);
});

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  let response;
  try {
    response = await fetch("auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
  } catch (err) {
    $("login-status").textContent = `login failed: the gateway cannot be reached (${err.message})`;
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("login-status").textContent = `login failed (${response.status}): ${problemText(response, body)}`;
    return;
  }
  $("login-status").textContent = "logged in";
  $("token").value = body.access_token;
  sessionStorage.setItem("token", body.access_token);
  start(body.access_token);
});

const saved = new URLSearchParams(window.location.hash.slice(1)).get("token") || sessionStorage.getItem("token");
if (saved) {
  $("token").value = saved;
  start(saved);
}
renderChart();
