"""The hub's one pub/sub connection: connect with backoff, subscribe everything, read frames.

One greenlet runs `run` for the life of the worker. Each connection re-subscribes every
channel and pattern the registry holds; each loss falls back to database polling (the
poller) until a connection succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore
from redis.exceptions import RedisError

from app import metrics
from app.logs import fields

from ..redis_adapter import FrameWaiter, pubsub_connection_options
from ..redis_target import RedisTarget
from .canary import Canary
from .registry import CHANNEL, PATTERN, SHARD, Subscriptions, deliver

log = logging.getLogger(__package__)

_CONFIRMATION_KIND = {"subscribe": CHANNEL, "psubscribe": PATTERN, "ssubscribe": SHARD}


class PubSubConnection:
    def __init__(
        self,
        target: RedisTarget,
        subscriptions: Subscriptions,
        canary: Canary,
        *,
        on_reconnect: Callable[[], None],
        poll_interval: float,
        reconnect_max_delay: float,
        connect_timeout: float,
        socket_timeout: float,
    ):
        self.target = target
        self._subs = subscriptions
        self._canary = canary
        self._on_reconnect = on_reconnect  # publishes made while we were away are lost
        self._poll_interval = poll_interval  # only for what the log says about the fallback
        self._reconnect_max_delay = reconnect_max_delay
        self._new_connection = target.connection_factory(
            **pubsub_connection_options(
                connect_timeout=connect_timeout, socket_timeout=socket_timeout
            )
        )
        self._conn = None
        self._write_lock = Semaphore()
        self.connected = False
        self.redis_down = False  # True once a connection attempt failed, until one succeeds
        self.first_attempt = Event()  # set after the first connection attempt, either way
        self.reconnects = 0
        # The server the connection last reached ("host:port"), and how often that changed:
        # under Sentinel, a failover.
        self.primary: str | None = None
        self.primary_changes = 0
        self._fallback_since: float | None = None  # while on database polling

    def send(self, *command: str) -> None:
        """Write a command on the pub/sub connection; while disconnected, reconnect re-sends."""
        with self._write_lock:
            if not self.connected:
                return
            sent = False
            try:
                self._conn.send_command(*command)
                sent = True
            except (RedisError, OSError) as exc:
                log.debug("hub write failed: %s", exc)
            finally:
                # Failed or interrupted half-way (the greenlet killed): either way the
                # connection is unusable. The reader reconnects and re-subscribes all.
                if not sent:
                    self.connected = False

    def run(self) -> None:
        delay = 0.1
        announced_down = False
        while True:
            try:
                self._connect()
            except Exception as exc:
                self.redis_down = True
                self.first_attempt.set()
                if not announced_down:
                    log.warning(
                        "Redis unreachable at %s (%s): waits are answered by database polling "
                        "every %.1fs until it returns",
                        self.target.describe(),
                        exc,
                        self._poll_interval,
                        extra=fields(event="redis.down", fallback="on"),
                    )
                    announced_down = True
                gevent.sleep(delay)
                delay = min(delay * 2, self._reconnect_max_delay)
                continue
            delay = 0.1
            log.info(
                "Redis pub/sub connected at %s: waits are answered by pub/sub",
                self.target.describe(),
                extra=fields(event="redis.up", fallback="off"),
            )
            if announced_down:
                self.reconnects += 1
                metrics.hub_reconnects.inc()
                self._on_reconnect()
            announced_down = False
            try:
                self._read_loop()
            except Exception as exc:
                # Anything at all: a reader that dies would leave the worker on polling.
                if not isinstance(exc, RedisError | OSError):
                    log.exception("hub reader failed")
                log.warning(
                    "Redis pub/sub connection lost (%s): falling back to database "
                    "polling every %.1fs",
                    exc,
                    self._poll_interval,
                    extra=fields(event="redis.down", fallback="on"),
                )
                announced_down = True
            finally:
                self.mark_disconnected()

    def _connect(self) -> None:
        conn = self._new_connection()
        conn.connect()
        with self._write_lock:
            conn.send_command("SUBSCRIBE", self._canary.channel, *self._subs.names(CHANNEL))
            patterns = self._subs.names(PATTERN)
            if patterns:
                conn.send_command("PSUBSCRIBE", *patterns)
            # One SSUBSCRIBE per channel: in a cluster one command may only name one slot.
            shards = [("SSUBSCRIBE", name) for name in self._subs.names(SHARD)]
            if shards:
                conn.send_packed_command(conn.pack_commands(shards))
            self._conn = conn
            self._note_primary(f"{conn.host}:{conn.port}")
            self._canary.reset()
            self.connected = True
            self.redis_down = False
        self.first_attempt.set()
        metrics.hub_connected.set(1)
        self.count_fallback_time(leaving=True)

    def _note_primary(self, address: str) -> None:
        if self.primary is not None and address != self.primary:
            self.primary_changes += 1
            metrics.redis_primary_changes.inc()
            log.warning(
                "Redis primary is now %s (was %s)",
                address,
                self.primary,
                extra=fields(event="redis.failover", primary=address, previous=self.primary),
            )
        self.primary = address

    def mark_disconnected(self) -> None:
        with self._write_lock:
            self.connected = False
            conn, self._conn = self._conn, None
            for sub in self._subs.values():
                sub.confirmed.clear()
        metrics.hub_connected.set(0)
        if self._fallback_since is None:
            self._fallback_since = time.monotonic()
        if conn is not None:
            conn.disconnect()

    def count_fallback_time(self, *, leaving: bool = False) -> None:
        """Add the time spent on database polling since the last count to the metric."""
        now = time.monotonic()
        if self._fallback_since is not None:
            metrics.fallback_mode_seconds.inc(now - self._fallback_since)
        self._fallback_since = None if leaving else now

    def _read_loop(self) -> None:
        conn = self._conn
        frames = FrameWaiter(conn)
        try:
            self._read_frames(conn, frames)
        finally:
            frames.close()

    def _read_frames(self, conn, frames: FrameWaiter) -> None:
        canary = self._canary
        canary.start(time.monotonic())
        last_frame = 0.0
        while self.connected and self._conn is conn:
            # What has arrived is read first; the canary only bounds how long silence lasts.
            if frames.wait(canary.wake_in(time.monotonic(), last_frame)):
                self._dispatch(conn.read_response())
                last_frame = time.monotonic()
            else:
                canary.check_echo(last_frame)
        raise redis.ConnectionError("write to the pub/sub connection failed")

    def _dispatch(self, response) -> None:
        if not isinstance(response, list):
            return
        kind = response[0]
        if kind == "message":
            if response[1] == self._canary.channel:
                self._canary.echoed(response[2])
                return
            sub = self._subs.get((CHANNEL, response[1]))
            deliver(sub, response[1], response[2], "redis", time.monotonic())
        elif kind == "smessage":
            sub = self._subs.get((SHARD, response[1]))
            deliver(sub, response[1], response[2], "redis", time.monotonic())
        elif kind == "pmessage":
            sub = self._subs.get((PATTERN, response[1]))
            deliver(sub, response[2], response[3], "redis", time.monotonic())
        elif kind in _CONFIRMATION_KIND:
            sub = self._subs.get((_CONFIRMATION_KIND[kind], response[1]))
            if sub is not None:
                sub.confirmed.set()
