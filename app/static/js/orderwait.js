// orderwait.js: follow one order's payment status from any page. No dependencies.
//
//   import { follow } from "/static/js/orderwait.js";
//   const following = follow(orderId, token, { onStatus: (order) => show(order) });
//   // following.stop() when the page no longer needs it
//
// - Transports: the long poll (`longpoll`, the default: GET /wait?since=<version>), `sse`
//   (EventSource, resumed with the last event id) or `websocket`.
// - Each version reaches onStatus once, in order; after a terminal state it stops.
// - A network error, a 5xx or a 429 falls back to plain polling of the order, backing off
//   with jitter and never sooner than Retry-After; the first answer returns to the transport.
// - A stopping server's answer (a long poll's `source: "shutdown"`, an SSE stream's end, a
//   WebSocket's 1001) is followed by a new request after the delay the server asked for,
//   which it draws at random over a window so that its clients do not all return at once.
// - The page coming back (visible again, restored from the back-forward cache, online again)
//   asks at once instead of finishing a backoff. With `pauseWhenHidden`, no long poll is
//   held while the page is hidden.
// - onConnection(state, detail) reports: "live", "polling" (after an error, detail.inMs),
//   "paused", "settled", "quiet" (maxQuietWaits unchanged waits in a row; call follow again
//   to go on), "refused" (a 4xx: detail.status, detail.error) and "stopped".

const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
const DEFAULTS = {
  transport: "longpoll",
  since: 0, // the version the caller shows already
  longPollMs: 30000,
  maxQuietWaits: Infinity,
  quietPauseMs: 0,
  fallbackPollMs: 2000,
  maxBackoffMs: 30000,
  pauseWhenHidden: false,
  baseUrl: "",
  onStatus() {},
  onConnection() {},
};

export function isTerminal(order) {
  return TERMINAL.has(order.paymentStatus);
}

export function follow(orderId, token, options = {}) {
  const follower = new Follower(orderId, token, { ...DEFAULTS, ...options });
  const done = follower.run();
  return {
    stop: () => follower.stop("stopped"),
    get version() {
      return follower.version;
    },
    done,
  };
}

const jitter = (ms) => ms * (0.5 + Math.random());
const shutdownPause = () => 100 + Math.random() * 400; // a server that names no delay

function retryAfterMs(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0;
}

class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class Follower {
  constructor(orderId, token, options) {
    this.orderId = encodeURIComponent(orderId);
    this.token = token;
    this.o = options;
    this.version = options.since;
    this.failures = 0; // in a row: above 0, the order is polled instead
    this.quiet = 0;
    this.ended = null;
    this.cancel = null; // ends the current request or pause early
    this.listen();
  }

  // -- what the page does ------------------------------------------------------------------

  listen() {
    const resume = () => this.resume();
    this.onVisibility = () => {
      if (document.visibilityState === "visible") resume();
      else if (this.o.pauseWhenHidden && this.cancel) this.cancel();
    };
    this.onPageShow = (event) => event.persisted && resume();
    document.addEventListener("visibilitychange", this.onVisibility);
    window.addEventListener("pageshow", this.onPageShow);
    window.addEventListener("online", resume);
    this.onOnline = resume;
    // A held request may never hear of the network going: ask again, which fails at once.
    this.onOffline = () => this.cancel && this.cancel();
    window.addEventListener("offline", this.onOffline);
  }

  resume() {
    // Whatever was pending may be dead (a frozen page, a network that came back): ask now.
    this.failures = Math.min(this.failures, 1);
    if (this.cancel) this.cancel();
  }

  hidden() {
    return this.o.pauseWhenHidden && document.visibilityState === "hidden";
  }

  stop(state, detail) {
    if (this.ended) return;
    this.ended = state;
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("pageshow", this.onPageShow);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    if (this.cancel) this.cancel();
    this.o.onConnection(state, detail || {});
  }

  deliver(order) {
    if (order.version > this.version) {
      this.version = order.version;
      this.o.onStatus(order);
    }
    if (isTerminal(order)) this.stop("settled");
  }

  // -- the loop ------------------------------------------------------------------------------

  async run() {
    while (!this.ended) {
      let pauseMs = 0;
      try {
        if (this.hidden()) {
          this.o.onConnection("paused", {});
          await this.pause(Infinity);
          continue;
        }
        if (this.failures > 0) pauseMs = await this.pollOrder();
        else pauseMs = await this[this.o.transport]();
      } catch (error) {
        if (this.ended) break;
        if (error instanceof Refused) {
          this.stop("refused", { status: error.status, error: error.message });
          break;
        }
        this.failures += 1;
        const backoff = this.o.fallbackPollMs * 2 ** (this.failures - 1);
        pauseMs = Math.max(jitter(Math.min(backoff, this.o.maxBackoffMs)), error.retryAfterMs || 0);
        this.o.onConnection("polling", { inMs: Math.round(pauseMs) });
      }
      if (!this.ended && pauseMs > 0) await this.pause(pauseMs);
    }
    return this.ended;
  }

  pause(ms) {
    return new Promise((resolve) => {
      const timer = ms === Infinity ? null : setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.cancel === done) self.cancel = null;
        resolve();
      }
      this.cancel = done;
    });
  }

  async request(path) {
    const controller = new AbortController();
    const cancel = () => controller.abort();
    this.cancel = cancel;
    try {
      const response = await fetch(this.o.baseUrl + path, {
        headers: { Authorization: `Bearer ${this.token}` },
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.ok) return await response.json();
      const body = await response.json().catch(() => ({}));
      if (response.status >= 400 && response.status < 500 && response.status !== 429) {
        throw new Refused(response.status, body.error || response.statusText);
      }
      const error = new Error(body.error || `HTTP ${response.status}`);
      error.retryAfterMs = retryAfterMs(response);
      throw error;
    } finally {
      if (this.cancel === cancel) this.cancel = null;
    }
  }

  // -- transports: each resolves to the pause before the next request -------------------------

  async pollOrder() {
    this.deliver(await this.request(`/api/orders/${this.orderId}`));
    this.failures = 0;
    if (!this.ended) this.o.onConnection("live", {});
    return 0;
  }

  async longpoll() {
    const since = this.version; // 0: answered at once with the current state
    const path = `/api/orders/${this.orderId}/wait?since=${since}&timeout=${this.o.longPollMs}`;
    let answer;
    try {
      answer = await this.request(path);
    } catch (error) {
      if (error.name === "AbortError" && !this.ended) return 0; // resumed, or paused
      throw error;
    }
    this.o.onConnection("live", {});
    this.deliver(answer);
    if (answer.source === "shutdown") return answer.retryInMs ?? shutdownPause();
    if (answer.changed || answer.version > since) {
      this.quiet = 0;
      return 0;
    }
    this.quiet += 1;
    if (this.quiet >= this.o.maxQuietWaits) this.stop("quiet");
    return this.o.quietPauseMs;
  }

  sse() {
    return this.stream((handlers) => {
      const query = `token=${encodeURIComponent(this.token)}&lastEventId=${this.version}`;
      const source = new EventSource(`${this.o.baseUrl}/api/orders/${this.orderId}/events?${query}`);
      let opened = false;
      source.onopen = () => {
        opened = true;
        this.o.onConnection("live", {});
      };
      source.addEventListener("order_status", (event) => this.deliver(JSON.parse(event.data)));
      // EventSource reconnects by itself (after the server's `retry:`) while the stream
      // was open; one that never opened, or that it gave up, is polled instead.
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED || !opened) handlers.failed();
        opened = false;
      };
      return () => source.close();
    });
  }

  websocket() {
    return this.stream((handlers) => {
      const base = new URL(this.o.baseUrl || location.href);
      base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
      const query = `token=${encodeURIComponent(this.token)}&lastEventId=${this.version}`;
      const socket = new WebSocket(`${base.origin}/api/orders/${this.orderId}/ws?${query}`);
      socket.onopen = () => this.o.onConnection("live", {});
      socket.onmessage = (event) => this.deliver(JSON.parse(event.data).payload);
      socket.onclose = (event) => {
        if (event.code === 1001) {
          const asked = /retry in (\d+) ms/.exec(event.reason);
          handlers.again(asked ? Number(asked[1]) : shutdownPause());
        } else if (event.code === 1000) {
          handlers.readOrder(); // settled, and nothing newer: one read of the order ends it
        } else handlers.failed();
      };
      return () => socket.close();
    });
  }

  // Runs one streaming connection until it ends; resolves to the pause before the next.
  stream(open) {
    return new Promise((resolve, reject) => {
      let close = null;
      const finish = (settle) => {
        if (this.cancel === cancel) this.cancel = null;
        if (close) close();
        settle();
      };
      const cancel = () => finish(() => resolve(0));
      this.cancel = cancel;
      close = open({
        again: (ms) => finish(() => resolve(ms)),
        readOrder: () =>
          finish(() => {
            this.failures = Math.max(this.failures, 1);
            resolve(0);
          }),
        failed: () => finish(() => reject(new Error("stream failed"))),
      });
      if (this.ended) finish(() => resolve(0));
    });
  }
}
