// The dashboard's shared worker: every dashboard tab of this browser shares one stream of
// each kind per admin token, so a second tab or a reload never needs more of the token's
// stream slots (SSE_MAX_STREAMS_PER_TOKEN). A tab subscribes with its token, gets what the
// streams last said at once, then everything they say; it leaves on pagehide, and the
// streams close when the last tab has left. (A last tab going into the back-forward cache
// may freeze this worker before its leave is read: the streams then stay until the tab
// comes back or is evicted, still shared with any dashboard tab opened meanwhile.)
"use strict";

importScripts("admin-streams.js");

const feeds = new Map(); // token -> {ports, streams, states, stats, services}

function send(feed, message) {
  for (const port of feed.ports) port.postMessage(message);
}

function remember(feed, name, message) {
  if (message.type === "state") feed.states[name] = message;
  else if (message.event === "sync") feed.stats = message;
  else if (message.event === "status") {
    for (const entry of message.data.services) feed.services.set(entry.service, entry);
  } else if (message.event === "service") {
    feed.services.set(message.data.service, message.data.status);
  }
}

function open(token, reconnectMs) {
  const feed = { ports: new Set(), streams: {}, states: {}, stats: null, services: new Map() };
  for (const [name, path] of Object.entries(self.AdminStreams.PATHS)) {
    feed.streams[name] = new self.AdminStreams.AdminStream(path, token, reconnectMs, (message) => {
      remember(feed, name, message);
      send(feed, { stream: name, ...message });
    });
  }
  feeds.set(token, feed);
  for (const stream of Object.values(feed.streams)) stream.start();
  return feed;
}

function replay(feed, port) {
  for (const [name, state] of Object.entries(feed.states)) port.postMessage({ stream: name, ...state });
  if (feed.stats) port.postMessage({ stream: "stats", ...feed.stats });
  if (feed.services.size) {
    const services = [...feed.services.values()];
    port.postMessage({ stream: "services", type: "event", event: "status", data: { services } });
  }
}

function leave(port) {
  for (const [token, feed] of feeds) {
    if (!feed.ports.delete(port) || feed.ports.size) continue;
    for (const stream of Object.values(feed.streams)) stream.stop();
    feeds.delete(token);
  }
}

// A tab says it is still there every REMIND_MS (its subscription again); a tab that closed
// or crashed without leaving is dropped after STALE_MS (hidden tabs' timers may run only
// once a minute), and the streams close if it was the last.
const STALE_MS = 3 * 60 * 1000;
const seen = new Map(); // port -> when it last spoke

function follow(port, token, reconnectMs) {
  seen.set(port, Date.now());
  const current = feeds.get(token);
  if (current && current.ports.has(port)) return; // a reminder
  leave(port); // a tab follows one token at a time
  const feed = current || open(token, reconnectMs);
  feed.ports.add(port);
  replay(feed, port);
}

setInterval(() => {
  const before = Date.now() - STALE_MS;
  for (const [port, at] of seen) {
    if (at < before) {
      seen.delete(port);
      leave(port);
    }
  }
}, STALE_MS / 6);

self.addEventListener("connect", (event) => {
  const port = event.ports[0];
  port.addEventListener("message", ({ data }) => {
    if (data.type === "subscribe") return follow(port, data.token, data.reconnectMs);
    seen.delete(port);
    leave(port);
  });
  // Where ports tell (Chromium): the tab's document is gone, however it went.
  port.addEventListener("close", () => {
    seen.delete(port);
    leave(port);
  });
  port.start();
});
