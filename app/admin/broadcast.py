"""One stats feed per worker, shared by all of its admin streams.

The first stream subscribes the worker to the trigger channel (through the hub) and starts
one greenlet; every trigger, safety-net poll or database poll makes ONE statistics read that
all streams of the worker receive. The last stream to leave unsubscribes and stops it.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.event import Event

from app import metrics
from app.errors import DATABASE_DOWN
from app.logs import first_line
from app.realtime import Hub
from app.realtime.hub import SHUTDOWN
from app.realtime.signals import Broadcast, Follower

from .stats import TRIGGER_CHANNEL, StatsSource

log = logging.getLogger(__name__)


class StatsFeed:
    def __init__(
        self, hub: Hub, source: StatsSource, *, safety_interval: float, db_interval: float
    ):
        self._hub = hub
        self._source = source
        self.safety_interval = safety_interval
        self.db_interval = db_interval
        self._broadcast = Broadcast()
        self._wake = Event()
        self._trigger_at: float | None = None
        self._streams = 0
        self._handler = None
        self._greenlet: gevent.Greenlet | None = None

    @property
    def mode(self) -> str:
        """`db-poll` once the hub knows Redis is down; `pubsub` while it is up or connecting."""
        self._hub.start()
        return "db-poll" if self._hub.redis_down else "pubsub"

    def join(self) -> Follower:
        """Follow the feed (the caller must `leave()` when its stream ends)."""
        self._streams += 1
        follower = self._broadcast.follow()
        if self._streams == 1:
            self._handler = self._hub.add_handler(TRIGGER_CHANNEL, self._on_trigger)
            self._greenlet = gevent.spawn(self._run)
        elif self._hub.closing:  # after the drain: this stream ends too, as the others did
            self._broadcast.send(None)
        return follower

    def leave(self) -> None:
        self._streams -= 1
        if self._streams == 0:
            # Forgotten first: the kill below blocks, and a client leaving meanwhile
            # (sse.Departure) may interrupt it.
            handler, greenlet = self._handler, self._greenlet
            self._handler = self._greenlet = None
            self._hub.remove_handler(handler)
            greenlet.kill()

    def current(self) -> dict:
        """Statistics for a stream that just connected."""
        mode = self.mode
        stats = self._source.get() if mode == "pubsub" else self._source.compute()
        return {**stats, "mode": mode}

    def _on_trigger(self, delivery) -> None:
        # In the hub's greenlet: note it and wake the feed, nothing more.
        if delivery.source == SHUTDOWN:
            self._broadcast.send(None)  # every stream of the feed ends
            return
        try:
            self._trigger_at = float(delivery.data)
        except ValueError:
            self._trigger_at = None
        self._wake.set()

    def _run(self) -> None:
        last_read = time.monotonic()
        while True:
            # Woken by a trigger; else at the next safety-net read, and at least every
            # db_interval so that Redis going away is noticed in time.
            until_safety = last_read + self.safety_interval - time.monotonic()
            self._wake.wait(max(min(self.db_interval, until_safety), 0.01))
            triggered = self._wake.is_set()
            self._wake.clear()
            now = time.monotonic()
            try:
                if self.mode == "db-poll":
                    metrics.fallback_queries.labels("stats").inc()
                    stats = {**self._source.compute(), "mode": "db-poll"}
                elif triggered:
                    stats = {**self._source.get(fresher_than=self._trigger_at), "mode": "pubsub"}
                elif now - last_read >= self.safety_interval:
                    # The safety net: statistics no older than its interval.
                    fresh = time.time() - self.safety_interval
                    stats = {**self._source.get(fresher_than=fresh), "mode": "poll"}
                else:
                    continue
            except DATABASE_DOWN as exc:
                # Expected while the database restarts: the next read tries again.
                log.warning("statistics read failed, database unavailable: %s", first_line(exc))
                continue
            except Exception:
                log.exception("statistics read failed")
                continue
            last_read = now
            self._broadcast.send(stats)
