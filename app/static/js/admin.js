// The admin dashboard: statistics and service status from two EventSource streams.
//
// The admin token comes from the URL fragment (#token=..., then removed from the address
// bar), this tab's sessionStorage, or the form. A stream that fails is closed and reopened
// after RECONNECT_MS; the dot is green while the statistics stream is open.
"use strict";

const page = document.getElementById("admin-page");
const RECONNECT_MS = Number(page.dataset.reconnectMs);
const TOKEN_KEY = "admin-token";
const CHART_WINDOW_MS = 10 * 60 * 1000;
const MODE_LABELS = { pubsub: "pub/sub", poll: "poll", "db-poll": "db-poll" };

const dot = document.getElementById("connection-status");
const modeBox = document.getElementById("stream-mode");
const form = document.getElementById("token-form");
const dashboard = document.getElementById("dashboard");
const paidSeries = []; // [time, paid orders]
const streams = {};

function takeToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function setConnected(connected) {
  dot.dataset.connected = String(connected);
  dot.title = connected ? "connected" : "disconnected, reconnecting";
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function showStats(stats) {
  const byStatus = stats.orders.byStatus;
  text("stat-paid", byStatus.paid);
  text("stat-pending", byStatus.pending);
  text("stat-revenue", stats.revenuePaid.toLocaleString());
  text("stat-last-hour", stats.paymentsLastHour);
  text("stat-mean", stats.meanSecondsToPay === null ? "–" : `${stats.meanSecondsToPay.toFixed(1)} s`);
  text("stat-live", `${stats.live.waiters} / ${stats.live.streams}`);
  text("stat-webhooks", `${stats.webhooks.received} (${stats.webhooks.duplicated} / ${stats.webhooks.rejected})`);
  text("stats-generated", new Date(stats.generatedAt).toLocaleTimeString());
  modeBox.dataset.mode = stats.mode;
  modeBox.textContent = MODE_LABELS[stats.mode] || stats.mode;
  drawChart(byStatus.paid);
}

function drawChart(paid) {
  const now = Date.now();
  paidSeries.push([now, paid]);
  while (paidSeries.length && paidSeries[0][0] < now - CHART_WINDOW_MS) paidSeries.shift();
  const low = Math.min(...paidSeries.map((point) => point[1]));
  const high = Math.max(low + 1, ...paidSeries.map((point) => point[1]));
  const points = paidSeries.map(([at, value]) => {
    const x = 300 * (1 - (now - at) / CHART_WINDOW_MS);
    const y = 78 - 76 * (value - low) / (high - low);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  document.querySelector("#payments-chart polyline").setAttribute("points", points.join(" "));
}

function showServices(services) {
  const body = document.querySelector("#services-table tbody");
  for (const entry of services) {
    let row = body.querySelector(`tr[data-service="${entry.service}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.service = entry.service;
      for (let i = 0; i < 4; i += 1) row.appendChild(document.createElement("td"));
      body.appendChild(row);
    }
    const cells = row.children;
    cells[0].textContent = entry.service;
    cells[1].textContent = entry.status;
    cells[2].textContent = JSON.stringify(entry.detail);
    cells[3].textContent = new Date(entry.at).toLocaleTimeString();
  }
}

function open(name, path, handlers, token) {
  const source = new EventSource(`${path}?token=${encodeURIComponent(token)}`);
  streams[name] = source;
  source.addEventListener("open", () => { if (name === "stats") setConnected(true); });
  for (const [event, handle] of Object.entries(handlers)) {
    source.addEventListener(event, (message) => handle(JSON.parse(message.data)));
  }
  source.addEventListener("error", () => {
    // Our own schedule instead of the browser's: close, show it, reopen later.
    source.close();
    if (name === "stats") setConnected(false);
    setTimeout(() => open(name, path, handlers, token), RECONNECT_MS);
  });
}

async function start(token) {
  let response;
  try {
    response = await fetch("/api/admin/stats", { headers: { Authorization: `Bearer ${token}` } });
  } catch (err) {
    response = null; // the server is away: the streams keep trying
  }
  if (response && (response.status === 401 || response.status === 403)) {
    sessionStorage.removeItem(TOKEN_KEY);
    const error = document.getElementById("token-error");
    error.textContent = "That is not an admin token.";
    error.hidden = false;
    form.hidden = false;
    return;
  }
  form.hidden = true;
  dashboard.hidden = false;
  if (response && response.ok) showStats(await response.json());
  open("stats", "/api/admin/stats/stream", { sync: showStats }, token);
  open("services", "/api/services/status/stream", {
    status: (message) => showServices(message.services),
    service: (message) => showServices([message.status]),
  }, token);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = new FormData(form).get("token");
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
});

const token = takeToken();
if (token) start(token);
else form.hidden = false;
