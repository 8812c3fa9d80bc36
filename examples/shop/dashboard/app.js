// The shop's live dashboard: one websocket to the gateway's /ws, no build step, no library.
//
// Protocol (adapters/websocket): send {"op": "subscribe", "channels": [...]}; receive
// {"type": "event", "channel": c, "event": {"topic": t, "data": {...}}}. The token travels as
// ?token= (browsers cannot set headers on a websocket). A channel the token's scopes do not
// allow closes the connection with 4403, so only the allowed channels are asked for.
//
// Reconnecting (docs/websocket.md, "Resuming after a reconnect"): every frame may carry a
// "cursor"; the page keeps the last one. When the connection is lost (1001, 1006, 1011-1014) it
// connects again after a backoff with jitter and subscribes with "since": the last cursor, so
// the gateway sends the events missed meanwhile, then the live ones. A "recovery_failed" frame
// says they could not be recovered: the page reloads what it can (the log history). The status
// badge shows the connection state: connecting, connected, reconnecting (with the delay), closed.
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
const MAX_ALERTS = 50;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

const $ = (id) => document.getElementById(id);
const RETRY_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);
const BACKOFF = { initialMs: 500, maxMs: 30000, multiplier: 2, jitter: 0.5 };
const state = {
  socket: null,
  token: null,
  cursor: null,            // the last cursor received: where a reconnection resumes
  failures: 0,             // connections lost or refused in a row (the backoff's exponent)
  retryTimer: null,
  reconnects: 0,
  recoveryFailed: 0,
  orders: new Map(),       // order_id -> row
  stock: new Map(),        // product_id -> row
  series: new Map(),       // source -> Map(window_start_s -> error_rate)
  alerts: 0,
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

function backoffMs(failures) {
  const base = Math.min(BACKOFF.maxMs, BACKOFF.initialMs * BACKOFF.multiplier ** Math.max(0, failures - 1));
  return base * (1 - BACKOFF.jitter * Math.random());
}

function connect(token) {
  clearTimeout(state.retryTimer);
  if (state.socket) {
    const old = state.socket;
    state.socket = null;  // its onclose is not ours any more
    old.close(1000, "reconnecting");
  }
  if (token !== state.token) {
    state.token = token;
    state.cursor = null;  // another identity: start from now
    state.failures = 0;
  }
  open(token);
}

function open(token) {
  const scopes = scopesOf(token);
  const channels = Object.keys(CHANNEL_SCOPES).filter((c) => scopes.has(CHANNEL_SCOPES[c]));
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  const socket = new WebSocket(url);
  const resuming = state.cursor !== null;
  state.socket = socket;
  setStatus(resuming ? "reconnecting: connecting" : "connecting", resuming ? "reconnecting" : "connecting");
  socket.onopen = () => {
    const frame = { op: "subscribe", channels };
    if (resuming) frame.since = state.cursor;
    socket.send(JSON.stringify(frame));
  };
  socket.onmessage = (message) => {
    if (state.socket !== socket) return;
    const frame = JSON.parse(message.data);
    if (typeof frame.cursor === "string") state.cursor = frame.cursor;
    if (frame.type === "subscribed") {
      state.failures = 0;
      setStatus("connected: " + frame.channels.join(", ") + (resuming ? " (resumed)" : ""), "connected");
      if (!resuming && frame.channels.includes("logs")) loadHistory(token);
    } else if (frame.type === "event") {
      onEvent(frame.channel, frame.event);
    } else if (frame.type === "recovery_failed") {
      state.recoveryFailed += 1;
      setStatus("connected: " + channels.join(", ") + " (missed events lost: " + frame.reason + ")", "connected");
      $("status").dataset.recovery = "failed";
      if (channels.includes("logs")) loadHistory(token);
    } else if (frame.type === "error") {
      setStatus("error: " + frame.error, "closed");
    }
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (RETRY_CODES.has(event.code)) {
      state.failures += 1;
      state.reconnects += 1;
      const delay = backoffMs(state.failures);
      setStatus(`reconnecting in ${(delay / 1000).toFixed(1)}s (closed ${event.code})`, "reconnecting");
      state.retryTimer = setTimeout(() => open(token), delay);
      return;
    }
    const reasons = { 4401: "bad or missing token", 4403: "channel not allowed", 1000: "closed by the server" };
    setStatus(`closed ${event.code} ${event.reason || reasons[event.code] || ""}`.trim(), "closed");
  };
}

function onEvent(channel, event) {
  const data = event.data || {};
  switch (event.topic) {
    case "order.created": return orderRow(data.order_id, data, "created");
    case "order.rejected": return orderRow(data.order_id, data, "rejected: " + (data.reason || ""));
    case "inventory.updated":
      orderRow(data.order_id, data, "applied");
      for (const item of data.items || []) stockRow(item.product_id, item.remaining, false);
      return;
    case "stock.low": return stockRow(data.product_id, data.remaining, true);
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

function orderRow(orderId, data, status) {
  if (!orderId) return;
  let row = state.orders.get(orderId);
  const tbody = $("orders").tBodies[0];
  if (!row) {
    row = document.createElement("tr");
    row.dataset.orderId = orderId;
    const items = (data.items || []).map((i) => `${i.quantity}× ${String(i.product_id).slice(0, 8)}`).join(", ");
    row.append(cell(new Date().toLocaleTimeString()), cell(orderId.slice(0, 12), "mono"), cell(items), cell(status));
    tbody.prepend(row);
    state.orders.set(orderId, row);
    while (tbody.rows.length > MAX_ORDERS) {
      const last = tbody.rows[tbody.rows.length - 1];
      state.orders.delete(last.dataset.orderId);
      last.remove();
    }
  } else if (status !== "created") {
    row.cells[3].textContent = status;
  }
  row.className = status.startsWith("rejected") ? "rejected" : status;
  row.dataset.status = status.split(":")[0];
  $("orders-count").textContent = String(state.orders.size);
}

function stockRow(productId, remaining, low) {
  if (!productId) return;
  let row = state.stock.get(productId);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.productId = productId;
    row.append(cell(productId, "mono"), cell(""));
    $("stock").tBodies[0].append(row);
    state.stock.set(productId, row);
  }
  row.cells[1].textContent = String(remaining);
  if (low) row.classList.add("low");
  row.dataset.low = row.classList.contains("low") ? "true" : "false";
  $("stock-count").textContent = String(state.stock.size);
}

// What happened before the page connected: GET /logs/stats and /logs/alerts (then live events).
async function loadHistory(token) {
  const headers = { Authorization: "Bearer " + token };
  const [stats, alerts] = await Promise.all([
    fetch("logs/stats?limit=1000", { headers }), fetch("logs/alerts?limit=" + MAX_ALERTS, { headers }),
  ]);
  if (stats.ok) {
    for (const s of await stats.json()) addPoint(s.source, s.window_start_s, s.error_rate, false);
    drawChart();
  }
  if (alerts.ok) for (const a of await alerts.json()) addAlert(a);
}

function addPoint(source, windowStart, errorRate, draw = true) {
  if (!state.series.has(source)) state.series.set(source, new Map());
  state.series.get(source).set(windowStart, errorRate);
  if (draw) drawChart();
}

function drawChart() {
  const canvas = $("error-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#9ca3af";
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad, pad / 2); ctx.lineTo(pad, h - pad); ctx.lineTo(w - 4, h - pad);
  ctx.stroke();
  for (const y of [0, 0.5, 1]) ctx.fillText(y.toFixed(1), 2, h - pad - y * (h - 1.5 * pad) + 4);
  const legend = $("chart-legend");
  legend.textContent = "";
  let points = 0;
  [...state.series.keys()].forEach((source, k) => {
    // x: the source's windows in order (sources cover different years, so not a shared time axis)
    const values = [...state.series.get(source).entries()].sort((a, b) => a[0] - b[0]);
    const color = COLORS[k % COLORS.length];
    ctx.strokeStyle = color;
    ctx.beginPath();
    values.forEach(([, rate], i) => {
      const x = pad + (i / Math.max(values.length - 1, 1)) * (w - pad - 8);
      const y = h - pad - rate * (h - 1.5 * pad);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    points += values.length;
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = color;
    li.append(swatch, `${source} (${values.length} windows)`);
    legend.append(li);
  });
  canvas.dataset.points = String(points);
}

function addAlert(alert) {
  const li = document.createElement("li");
  li.textContent = `[${alert.kind}] ${alert.message || alert.source}`;
  li.dataset.kind = alert.kind;
  const list = $("alerts");
  list.prepend(li);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
  state.alerts += 1;
  $("alerts-count").textContent = String(state.alerts);
}

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (token) {
    sessionStorage.setItem("token", token);
    connect(token);
  }
});

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
  connect(body.access_token);
});

const saved = new URLSearchParams(window.location.hash.slice(1)).get("token") || sessionStorage.getItem("token");
if (saved) {
  $("token").value = saved;
  connect(saved);
}
drawChart();
