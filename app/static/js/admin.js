// The admin dashboard: statistics and service status from the two admin streams.
//
// The admin token comes from the URL fragment (#token=..., then removed from the address
// bar), this tab's sessionStorage, or the form. The streams are shared by every dashboard
// tab through a shared worker (admin-worker.js): one of each kind per token, however many
// tabs, so reloads and second tabs never meet the token's stream limit. The page leaves
// them on pagehide. A stream that ends is reopened after RECONNECT_MS; a refused one (429,
// 503) is shown with the server's reason and retried after its Retry-After. The dot is
// green while the statistics stream is open.
"use strict";

const page = document.getElementById("admin-page");
const RECONNECT_MS = Number(page.dataset.reconnectMs);
const TOKEN_KEY = "admin-token";
const REMIND_MS = 30 * 1000;
const MODE_LABELS = { pubsub: "pub/sub", poll: "poll", "db-poll": "db-poll" };
const STATUS_ORDER = ["paid", "pending", "cancelled", "failed", "expired"];
const STATUS_LABELS = { paid: "Paid", pending: "Pending", cancelled: "Cancelled", failed: "Failed", expired: "Expired" };
const STREAM_LABELS = { stats: "Statistics", services: "Service status" };

const dot = document.getElementById("connection-status");
const modeBox = document.getElementById("stream-mode");
const form = document.getElementById("token-form");
const dashboard = document.getElementById("dashboard");
const notice = document.getElementById("stream-notice");
const refusals = {}; // stream -> message while refused
let leave = null; // leaves the streams this page follows

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

function showCounts(byStatus) {
  const box = document.getElementById("status-counts");
  const statuses = [...STATUS_ORDER, ...Object.keys(byStatus).filter((s) => !STATUS_ORDER.includes(s))];
  for (const status of statuses) {
    let value = document.getElementById(`stat-${status}`);
    if (!value) {
      const card = document.createElement("div");
      card.className = "card stat";
      card.dataset.status = status;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = STATUS_LABELS[status] || status;
      value = document.createElement("span");
      value.className = "value";
      value.id = `stat-${status}`;
      card.append(label, value);
      box.append(card);
    }
    value.textContent = String(byStatus[status] ?? 0);
  }
}

function showStats(stats) {
  showCounts(stats.orders.byStatus);
  text("stat-total", stats.orders.total);
  text("stat-revenue", stats.revenuePaid.toLocaleString());
  text("stat-last-hour", stats.paymentsLastHour);
  text("stat-mean", stats.meanSecondsToPay === null ? "–" : `${stats.meanSecondsToPay.toFixed(1)} s`);
  text("stat-live", `${stats.live.waiters} / ${stats.live.streams}`);
  text("stat-webhooks", `${stats.webhooks.received} (${stats.webhooks.duplicated} / ${stats.webhooks.rejected})`);
  text("stats-generated", new Date(stats.generatedAt).toLocaleTimeString());
  modeBox.dataset.mode = stats.mode;
  modeBox.textContent = MODE_LABELS[stats.mode] || stats.mode;
  if (stats.perMinute) window.AdminChart.draw(document.getElementById("payments-chart"), stats.perMinute);
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

function showRefusals() {
  const lines = Object.values(refusals);
  notice.textContent = lines.join(" ");
  notice.hidden = lines.length === 0;
  notice.dataset.streams = Object.keys(refusals).join(" ");
}

function askForToken(message) {
  if (leave) leave();
  sessionStorage.removeItem(TOKEN_KEY);
  const error = document.getElementById("token-error");
  error.textContent = message;
  error.hidden = false;
  form.hidden = false;
}

const EVENTS = {
  sync: showStats,
  status: (message) => showServices(message.services),
  service: (message) => showServices([message.status]),
};

function onMessage(message) {
  if (message.type === "event") {
    const handle = EVENTS[message.event];
    if (handle) handle(message.data);
    return;
  }
  const { stream, state } = message;
  if (stream === "stats") setConnected(state === "open");
  if (state === "unauthorized") return askForToken("That is not an admin token.");
  if (state === "refused") {
    const seconds = Math.round(message.retryMs / 1000);
    refusals[stream] = `${STREAM_LABELS[stream]} stream refused (${message.status}): ${message.message}. `
      + `Retrying in ${seconds} s.`;
  } else if (state === "open") {
    delete refusals[stream];
  }
  showRefusals();
}

function follow(token) {
  if (leave) leave();
  if (window.SharedWorker) {
    try {
      const worker = new SharedWorker(page.dataset.worker, { name: "admin-streams" });
      worker.port.addEventListener("message", (event) => onMessage(event.data));
      worker.port.start();
      const subscribe = () => worker.port.postMessage({ type: "subscribe", token, reconnectMs: RECONNECT_MS });
      subscribe();
      const reminder = setInterval(subscribe, REMIND_MS); // still here (see admin-worker.js)
      leave = () => {
        clearInterval(reminder);
        worker.port.postMessage({ type: "leave" });
        leave = null;
      };
      return;
    } catch (err) {
      // no shared worker here: this page opens its own streams
    }
  }
  const streams = Object.entries(window.AdminStreams.PATHS).map(([name, path]) =>
    new window.AdminStreams.AdminStream(path, token, RECONNECT_MS, (m) => onMessage({ stream: name, ...m })));
  for (const stream of streams) stream.start();
  leave = () => { for (const stream of streams) stream.stop(); leave = null; };
}

async function start(token) {
  let response;
  try {
    response = await fetch("/api/admin/stats", { headers: { Authorization: `Bearer ${token}` } });
  } catch (err) {
    response = null; // the server is away: the streams keep trying
  }
  if (response && (response.status === 401 || response.status === 403)) {
    askForToken("That is not an admin token.");
    return;
  }
  form.hidden = true;
  dashboard.hidden = false;
  if (response && response.ok) showStats(await response.json());
  follow(token);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = new FormData(form).get("token");
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
});

// Leaving (reload, another page, closing the tab): give the streams back now, not when the
// browser gets round to it. Back from the back-forward cache: follow them again.
window.addEventListener("pagehide", () => { if (leave) leave(); });
window.addEventListener("pageshow", (event) => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (event.persisted && token) follow(token);
});

const token = takeToken();
if (token) start(token);
else form.hidden = false;
