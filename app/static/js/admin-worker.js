// The dashboard's shared worker: every dashboard tab of this browser shares one stream of
// each kind per admin token, so a second tab or a reload never needs more of the token's
// stream slots (SSE_MAX_STREAMS_PER_TOKEN). A tab subscribes with its token, gets what the
// streams last said at once, then everything they say; it leaves on pagehide, and the
// streams close when the last tab has left.
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

self.addEventListener("connect", (event) => {
  const port = event.ports[0];
  port.addEventListener("message", ({ data }) => {
    leave(port); // a tab follows one token at a time
    if (data.type !== "subscribe") return;
    const feed = feeds.get(data.token) || open(data.token, data.reconnectMs);
    feed.ports.add(port);
    replay(feed, port);
  });
  port.start();
});
