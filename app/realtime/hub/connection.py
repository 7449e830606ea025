"""One pub/sub connection of the hub: connect with backoff, subscribe its share, read frames.

One greenlet runs `run` for as long as the connection is wanted. Each connection subscribes
every channel and pattern of its share the registry holds (all of them on a single Redis;
on a cluster node, the order channels of that node's slots); each loss falls back to
database polling (the poller) until a connection succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore
from redis.exceptions import RedisError, ResponseError

from app import metrics
from app.logs import fields

from ..redis_adapter import FrameWaiter
from .canary import Canary
from .registry import CHANNEL, PATTERN, SHARD, SUBSCRIBE, Subscriptions, deliver

log = logging.getLogger(__package__)

_CONFIRMATION_KIND = {"subscribe": CHANNEL, "psubscribe": PATTERN, "ssubscribe": SHARD}


class Share:
    """What one connection carries: subscriptions of these kinds, and its canary."""

    canary_kind = CHANNEL

    def __init__(self, kinds: frozenset[str] = frozenset((CHANNEL, PATTERN, SHARD))):
        self.kinds = kinds

    def owns(self, kind: str, name: str) -> bool:
        return kind in self.kinds

    def canary_channel(self, base: str) -> str:
        return base


class PubSubConnection:
    def __init__(
        self,
        name: str,
        new_connection: Callable[[], redis.Connection],
        share: Share,
        subscriptions: Subscriptions,
        canary: Canary,
        *,
        on_reconnect: Callable[[], None],
        on_state: Callable[[], None],
        on_moved: Callable[[], None],
        poll_interval: float,
        reconnect_max_delay: float,
        reconnect_at_first: bool = False,
    ):
        self.name = name  # for logs: where it connects
        self._new_connection = new_connection
        self.share = share
        self._subs = subscriptions
        self._canary = canary
        self._on_reconnect = on_reconnect  # publishes made while we were away are lost
        self._on_state = on_state  # connected or not: the links recount
        self._on_moved = on_moved  # the server says a channel is served elsewhere now
        self._poll_interval = poll_interval  # only for what the log says about the fallback
        self._reconnect_max_delay = reconnect_max_delay
        # A connection added after start (a promoted primary) missed what was published
        # before it: its first connection re-reads like a reconnection.
        self._reconnect_at_first = reconnect_at_first
        self._conn = None
        self._write_lock = Semaphore()
        self.connected = False
        self.redis_down = False  # True once a connection attempt failed, until one succeeds
        self.first_attempt = Event()  # set after the first connection attempt, either way
        self.reconnects = 0
        self.address: str | None = None  # "host:port" of the last connection

    @property
    def canary_channel(self) -> str:
        return self._canary.channel

    def reread_on_connect(self) -> None:
        """The next connection re-reads the database, as a reconnection does."""
        self._reconnect_at_first = True

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
                        self.name,
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
                self.name,
                extra=fields(event="redis.up", fallback="off"),
            )
            if announced_down or self._reconnect_at_first:
                self._reconnect_at_first = False
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
                    "Redis pub/sub connection to %s lost (%s): falling back to database "
                    "polling every %.1fs",
                    self.name,
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
        share, subs = self.share, self._subs
        with self._write_lock:
            self._canary.channel = share.canary_channel(self._canary.base)
            commands = [(SUBSCRIBE[share.canary_kind], self._canary.channel)]
            channels = [name for name in subs.names(CHANNEL) if share.owns(CHANNEL, name)]
            if channels:
                commands.append(("SUBSCRIBE", *channels))
            patterns = [name for name in subs.names(PATTERN) if share.owns(PATTERN, name)]
            if patterns:
                commands.append(("PSUBSCRIBE", *patterns))
            # One SSUBSCRIBE per channel: in a cluster one command may only name one slot.
            commands += [
                ("SSUBSCRIBE", name) for name in subs.names(SHARD) if share.owns(SHARD, name)
            ]
            conn.send_packed_command(conn.pack_commands(commands))
            self._conn = conn
            self.address = f"{conn.host}:{conn.port}"
            self._canary.reset()
            self.connected = True
            self.redis_down = False
        self.first_attempt.set()
        self._on_state()

    def mark_disconnected(self) -> None:
        with self._write_lock:
            self.connected = False
            conn, self._conn = self._conn, None
            for sub in self._subs.values():
                if self.share.owns(sub.kind, sub.name):
                    sub.unconfirm()
        self._on_state()
        if conn is not None:
            conn.disconnect()

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
                try:
                    self._dispatch(conn.read_response())
                except ResponseError as exc:
                    # -MOVED to an SSUBSCRIBE: the slot is served elsewhere now.
                    log.info("pub/sub at %s refused a command: %s", self.name, exc)
                    self._on_moved()
                last_frame = time.monotonic()
            else:
                canary.check_echo(last_frame)
        raise redis.ConnectionError("write to the pub/sub connection failed, or it was closed")

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
            if response[1] == self._canary.channel:
                self._canary.echoed(response[2])
                return
            sub = self._subs.get((SHARD, response[1]))
            deliver(sub, response[1], response[2], "redis", time.monotonic())
        elif kind == "sunsubscribe":
            # Sent by the server itself when the channel's slot moved to another node: if it
            # is still watched and still thought to be served here, the layout is stale.
            name = response[1]
            sub = self._subs.get((SHARD, name))
            if name == self._canary.channel or (sub is not None and self.share.owns(SHARD, name)):
                if sub is not None:
                    sub.unconfirm()
                self._on_moved()
        elif kind == "pmessage":
            sub = self._subs.get((PATTERN, response[1]))
            deliver(sub, response[2], response[3], "redis", time.monotonic())
        elif kind in _CONFIRMATION_KIND:
            sub = self._subs.get((_CONFIRMATION_KIND[kind], response[1]))
            if sub is not None:
                sub.confirm()
