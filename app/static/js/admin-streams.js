// The dashboard's two admin streams, read with fetch: unlike EventSource it sees why a
// stream was refused (429: the token's streams are all open; 503: the database is down),
// with the server's message and its Retry-After. Loaded by the dashboard's shared worker
// (admin-worker.js), or by the page itself where shared workers do not exist.
"use strict";

(function (scope) {
  const PATHS = { stats: "/api/admin/stats/stream", services: "/api/services/status/stream" };

  // One stream, reopened when it ends: after `reconnectMs`, or after Retry-After when
  // refused. `report` gets {type: "state", state, ...} and {type: "event", event, data}.
  class AdminStream {
    constructor(path, token, reconnectMs, report) {
      this.path = path;
      this.token = token;
      this.reconnectMs = reconnectMs;
      this.report = report;
      this.stopped = true;
      this.controller = null;
      this.timer = null;
    }

    start() {
      this.stopped = false;
      this.run();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.controller) this.controller.abort(); // the server frees the slot at once
    }

    async run() {
      this.controller = new AbortController();
      let retryMs = this.reconnectMs;
      try {
        const response = await fetch(this.path, {
          headers: { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" },
          cache: "no-store",
          signal: this.controller.signal,
        });
        if (response.ok) {
          this.report({ type: "state", state: "open" });
          await this.read(response.body);
          this.report({ type: "state", state: "closed" });
        } else {
          const answer = await response.json().catch(() => ({}));
          if (response.status === 401 || response.status === 403) {
            this.report({ type: "state", state: "unauthorized", status: response.status });
            return; // a wrong token stays wrong
          }
          const seconds = Number(response.headers.get("Retry-After"));
          if (seconds > 0) retryMs = seconds * 1000;
          this.report({
            type: "state",
            state: "refused",
            status: response.status,
            message: answer.error || `HTTP ${response.status}`,
            retryMs,
          });
        }
      } catch (err) {
        if (this.stopped) return;
        this.report({ type: "state", state: "closed" });
      }
      if (!this.stopped) this.timer = setTimeout(() => this.run(), retryMs);
    }

    async read(body) {
      const reader = body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    }

    dispatch(block) {
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // a comment: the heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) this.report({ type: "event", event, data: JSON.parse(data.join("\n")) });
    }
  }

  scope.AdminStreams = { PATHS, AdminStream };
})(self);
