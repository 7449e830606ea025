// The order page: shows the order and follows its payment with orderwait.js.
//
// Long polls, each answered at once on a change; after maxLongPolls quiet ones in a row the
// page says "still processing" and offers to check again. Errors fall back to polling (the
// client's own behaviour). Without a token the page says so once, and nothing pretends to
// update.
import { follow, isTerminal } from "./orderwait.js";

const page = document.getElementById("order-page");
const settings = {
  orderId: page.dataset.orderId,
  longPollMs: Number(page.dataset.longPollMs),
  maxLongPolls: Number(page.dataset.maxLongPolls),
  retryPauseMs: Number(page.dataset.retryPauseMs),
  fallbackPollMs: Number(page.dataset.fallbackPollMs),
};
const $ = (id) => document.getElementById(id);
const statusBox = $("payment-status");
const OUTCOMES = {
  completed: { message: "Payment received. Thank you!" },
  cancelled: {
    message: "Payment cancelled.",
    next: "The M-PESA prompt was declined or dismissed; nothing was charged.",
  },
  failed: { message: "Payment failed.", next: "Nothing was charged." },
  expired: {
    message: "Payment expired.",
    next: "The M-PESA prompt was not answered in time; nothing was charged.",
  },
};

let version = 0;
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

function startElapsed() {
  const started = Date.now();
  clearInterval(elapsedTimer);
  elapsedTimer = setInterval(() => {
    const elapsed = $("elapsed");
    if (elapsed) elapsed.textContent = Math.round((Date.now() - started) / 1000);
  }, 1000);
}

function money(order) {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: order.currency }).format(
    order.totalAmount,
  );
}

function show(order) {
  version = order.version;
  $("order-number").textContent = order.orderNumber;
  $("order-customer").textContent = `${order.customer.firstName} ${order.customer.lastName}`;
  $("order-tickets").textContent = String(order.ticketCount);
  $("order-amount").textContent = money(order);
  if (!isTerminal(order)) return;
  const outcome = OUTCOMES[order.paymentStatus];
  clearInterval(elapsedTimer);
  statusBox.dataset.status = order.paymentStatus;
  statusBox.className = `status status-${order.paymentStatus}`;
  statusBox.textContent = outcome.message;
  $("payment-hint").hidden = true;
  $("connection-note").hidden = true;
  $("check-again").hidden = true;
  if (order.paymentStatus === "completed" && order.mpesaReceipt) {
    $("receipt-number").textContent = order.mpesaReceipt;
    $("receipt").hidden = false;
  }
  if (outcome.next) {
    const reason = order.failureReason ? ` (${order.failureReason})` : "";
    $("next-step-text").textContent = `${outcome.next}${reason}`;
    $("next-step").hidden = false;
  }
  const simulate = $("simulate");
  if (simulate) simulate.hidden = true;
}

function connection(state, detail) {
  $("connection-note").hidden = state !== "polling";
  if (state === "quiet") {
    clearInterval(elapsedTimer);
    statusBox.dataset.status = "still-processing";
    statusBox.textContent = "Still processing. If you approved the payment, it will show here.";
    $("check-again").hidden = false;
  } else if (state === "refused") {
    clearInterval(elapsedTimer);
    statusBox.dataset.status = "error";
    statusBox.className = "status status-failed";
    statusBox.textContent = `This order cannot be shown (${detail.error}). Check the link.`;
    $("payment-hint").hidden = true;
  }
}

function start(token) {
  startElapsed();
  follow(settings.orderId, token, {
    since: version,
    longPollMs: settings.longPollMs,
    maxQuietWaits: settings.maxLongPolls,
    quietPauseMs: settings.retryPauseMs,
    fallbackPollMs: settings.fallbackPollMs,
    onStatus: show,
    onConnection: connection,
  });
}

function enableSimulator(token) {
  const simulate = $("simulate");
  if (!simulate) return;
  simulate.hidden = false;
  simulate.addEventListener("click", (event) => {
    const outcome = event.target.dataset.outcome;
    if (!outcome) return;
    fetch(`/api/dev/orders/${settings.orderId}/simulate`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ outcome }),
    });
  });
}

const saved = takeToken();
const token = saved.token;
if (!token) {
  $("no-token").hidden = false;
} else {
  $("order-card").hidden = false;
  enableSimulator(token);
  $("check-again").addEventListener("click", () => {
    $("check-again").hidden = true;
    statusBox.dataset.status = "processing";
    statusBox.textContent = "Checking…";
    start(token);
  });
  if (saved.order) show(saved.order); // as created: the first wait is then held at once
  start(token);
}
