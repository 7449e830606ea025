// The order status page: long polling with a bounded retry strategy and a polling fallback.
//
// - Hold GET /api/orders/<id>/wait?since=<version>; an answer shows the new state at once.
// - A wait that times out unchanged is retried after a pause, MAX_LONG_POLLS times in all;
//   then "still processing" with a button to check again.
// - A network error or a 5xx switches to plain polling of GET /api/orders/<id>, backing off
//   with jitter; the first answer from the server returns the page to long polling.
// A payment normally costs one request; nothing here can loop without waiting.
"use strict";

const page = document.getElementById("order-page");
const settings = {
  orderId: page.dataset.orderId,
  longPollMs: Number(page.dataset.longPollMs),
  maxLongPolls: Number(page.dataset.maxLongPolls),
  retryPauseMs: Number(page.dataset.retryPauseMs),
  fallbackPollMs: Number(page.dataset.fallbackPollMs),
};
const statusBox = document.getElementById("payment-status");
const checkAgain = document.getElementById("check-again");
const connectionNote = document.getElementById("connection-note");
const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
const MESSAGES = {
  completed: "Payment received. Thank you!",
  cancelled: "Payment cancelled.",
  failed: "Payment failed.",
  expired: "Payment expired.",
};

const stored = takeToken();
const auth = { Authorization: `Bearer ${stored.token}` };
let since = stored.version || 1;
let elapsedTimer = null;

function takeToken() {
  // From the fragment (then removed from the address bar), else from this tab's storage.
  const key = `order:${settings.orderId}`;
  const saved = JSON.parse(sessionStorage.getItem(key) || "{}");
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    saved.token = decodeURIComponent(match[1]);
    sessionStorage.setItem(key, JSON.stringify(saved));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return saved;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = (ms) => ms * (0.5 + Math.random());

function startElapsed() {
  const started = Date.now();
  const elapsed = document.getElementById("elapsed");
  elapsedTimer = setInterval(() => {
    if (elapsed) elapsed.textContent = Math.round((Date.now() - started) / 1000);
  }, 1000);
}

function render(order) {
  since = Math.max(since, order.version);
  document.getElementById("order-number").textContent = order.orderNumber;
  document.getElementById("order-summary").textContent =
    `${order.ticketCount} ticket(s), ${order.currency} ${order.totalAmount}`;
  if (!TERMINAL.has(order.paymentStatus)) return false;
  clearInterval(elapsedTimer);
  statusBox.dataset.status = order.paymentStatus;
  statusBox.className = `status status-${order.paymentStatus}`;
  statusBox.textContent = MESSAGES[order.paymentStatus];
  connectionNote.hidden = true;
  checkAgain.hidden = true;
  document.getElementById("payment-hint").hidden = true;
  const simulate = document.getElementById("simulate");
  if (simulate) simulate.hidden = true;
  return true;
}

function showProblem(message) {
  clearInterval(elapsedTimer);
  statusBox.dataset.status = "error";
  statusBox.className = "status status-failed";
  statusBox.textContent = message;
}

async function longPoll() {
  for (let attempt = 1; attempt <= settings.maxLongPolls; attempt += 1) {
    let response;
    try {
      const url = `/api/orders/${settings.orderId}/wait?since=${since}&timeout=${settings.longPollMs}`;
      response = await fetch(url, { headers: auth });
    } catch (err) {
      return pollUntilAnswered();
    }
    if (response.status >= 500) return pollUntilAnswered();
    if (!response.ok) return showProblem("This order cannot be shown (check the link).");
    const order = await response.json();
    connectionNote.hidden = true;
    if (render(order)) return;
    if (order.changed) attempt = 0; // it moved but is not settled: keep listening
    else if (order.source === "shutdown") {
      // The server is restarting: ask again soon (a live worker answers), and this round
      // does not count. The short random pause spreads the reconnects of many pages.
      attempt -= 1;
      await sleep(100 + Math.random() * 400);
    } else if (attempt < settings.maxLongPolls) await sleep(settings.retryPauseMs);
  }
  statusBox.dataset.status = "still-processing";
  statusBox.textContent = "Still processing. If you approved the payment, it will show here.";
  clearInterval(elapsedTimer);
  checkAgain.hidden = false;
}

async function pollUntilAnswered() {
  connectionNote.hidden = false;
  let delay = settings.fallbackPollMs;
  for (;;) {
    await sleep(jitter(delay));
    try {
      const response = await fetch(`/api/orders/${settings.orderId}`, { headers: auth });
      if (response.ok) {
        if (render(await response.json())) return;
        connectionNote.hidden = true;
        return longPoll(); // the server answers again
      }
      if (response.status < 500) return showProblem("This order cannot be shown (check the link).");
    } catch (err) {
      // still unreachable: back off below
    }
    delay = Math.min(delay * 2, 30000);
  }
}

checkAgain.addEventListener("click", () => {
  checkAgain.hidden = true;
  statusBox.dataset.status = "processing";
  statusBox.textContent = "Checking…";
  startElapsed();
  longPoll();
});

const simulate = document.getElementById("simulate");
if (simulate) {
  simulate.addEventListener("click", (event) => {
    const outcome = event.target.dataset.outcome;
    if (!outcome) return;
    fetch(`/api/dev/orders/${settings.orderId}/simulate`, {
      method: "POST",
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ outcome }),
    });
  });
}

if (!stored.token) {
  showProblem("This link has no order token. Open the page from the checkout.");
} else {
  startElapsed();
  longPoll();
}
