"""The subscriber hub: ONE Redis pub/sub connection per worker process, read by one greenlet.

Waiters register per channel (or pattern); the hub subscribes on the first and unsubscribes
after the last, so Redis connections stay constant whatever the number of waiters. Every
waiter of a channel shares one wake-up object, so a publish costs one event set, not one
per waiter.

When Redis is unreachable the hub polls the database instead: one batched query per interval
for every order watched in this process, through poll sources the features register. On
recovery it re-subscribes everything and polls once more, so a change whose publish was lost
during the outage still reaches its waiters.

The hub knows no feature: channels, payloads and poll sources are plain strings and callables.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore
from redis.exceptions import RedisError

from app import metrics
from app.logs import fields

from .readiness import FrameWaiter
from .signals import Broadcast

log = logging.getLogger(__name__)

CHANNEL = "channel"
PATTERN = "pattern"
SHARD = "shard"  # a sharded channel (Redis 7: SSUBSCRIBE / SPUBLISH)
_SUBSCRIBE = {CHANNEL: "SUBSCRIBE", PATTERN: "PSUBSCRIBE", SHARD: "SSUBSCRIBE"}
_UNSUBSCRIBE = {CHANNEL: "UNSUBSCRIBE", PATTERN: "PUNSUBSCRIBE", SHARD: "SUNSUBSCRIBE"}
_CONFIRMATION_KIND = {"subscribe": CHANNEL, "psubscribe": PATTERN, "ssubscribe": SHARD}

# A poll source maps watched ids (channel names without the source's prefix) to
# (version, payload) for the ids that exist; payload has the shape of a published message.
PollSource = Callable[[list[str]], dict[str, tuple[int, str]]]


SHUTDOWN = "shutdown"
# What redis-py's BlockingConnectionPool raises when no connection freed up in time.
POOL_EXHAUSTED = "No connection available."


class Delivery(NamedTuple):
    channel: str
    data: str
    # "redis" (pub/sub), "poll" (database poll while Redis is away) or SHUTDOWN (the worker
    # is stopping: stop waiting, answer with what you have)
    source: str
    received: float  # time.monotonic() when the hub got it: every waiter's delivery latency


class _Subscription:
    __slots__ = ("kind", "name", "waiters", "handlers", "broadcast", "confirmed", "polled_version")

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name
        self.waiters = 0
        self.handlers: list[Callable[[Delivery], None]] = []
        self.broadcast = Broadcast()  # one wake-up for every waiter of the channel
        self.confirmed = Event()  # set when Redis acknowledged the SUBSCRIBE
        self.polled_version: int | None = None


class Watch:
    """A waiter's place on one channel. Use as a context manager so it is always released."""

    __slots__ = ("_hub", "_sub", "_follower")

    def __init__(self, hub: Hub, sub: _Subscription):
        self._hub = hub
        self._sub = sub
        self._follower = sub.broadcast.follow()

    @property
    def channel(self) -> str:
        return self._sub.name

    def next(self, timeout: float) -> Delivery | None:
        """Block until the next delivery on the channel, or None once `timeout` seconds pass."""
        self._hub.parked += 1
        try:
            _, delivery = self._follower.wait(timeout)
        finally:
            self._hub.parked -= 1
        return delivery

    def close(self) -> None:
        if self._sub is not None:
            self._hub._release_waiter(self._sub)
            self._sub = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Handler(NamedTuple):
    subscription: _Subscription
    callback: Callable[[Delivery], None]


def redact_url(url: str) -> str:
    """Hide the password of a Redis URL so it can be logged."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class Hub:
    def __init__(
        self,
        redis_url: str,
        *,
        publisher: redis.Redis | None = None,
        poll_interval: float = 2.0,
        canary_interval: float = 5.0,
        canary_timeout: float = 3.0,
        reconnect_max_delay: float = 2.0,
        connect_timeout: float = 0.5,
        socket_timeout: float = 5.0,
        confirm_timeout: float = 1.0,
        sharded: bool = False,
    ):
        self.redis_url = redis_url
        # Waiters' channels as sharded channels: their publishers must SPUBLISH. Handlers'
        # channels and patterns (few, deployment-wide) stay on classic pub/sub.
        self.sharded = sharded
        self._watch_kind = SHARD if sharded else CHANNEL
        self.poll_interval = poll_interval
        self.canary_interval = canary_interval
        self.canary_timeout = canary_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.confirm_timeout = confirm_timeout
        # Reads wait in can_read with their own timeout; socket_timeout bounds the connect
        # handshake, writes and the rest of a frame, so a frozen server cannot hang the hub.
        pool = redis.ConnectionPool.from_url(
            redis_url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            socket_keepalive=True,
            client_name="orderwait:hub",
            # A payload that is not UTF-8 must not break the connection every waiter shares.
            encoding_errors="replace",
            # RESP2: pub/sub frames come back from read_response as plain arrays. Under
            # RESP3 (redis-py 8's default) they are push frames it hands to a handler instead.
            protocol=2,
        )
        self._connection_class = pool.connection_class
        self._connection_kwargs = pool.connection_kwargs
        self._conn = None
        self._write_lock = Semaphore()
        self._subs: dict[tuple[str, str], _Subscription] = {}
        self._poll_sources: dict[str, PollSource] = {}
        self._waiters = 0
        # The canary: a message this hub publishes to itself through the command connection
        # that application publishes use. A missing echo means the subscription went silent.
        self._publisher = publisher or redis.Redis(
            connection_pool=redis.ConnectionPool.from_url(
                redis_url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout
            )
        )
        self._canary_channel = f"hub:canary:{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._canary_token = 0
        self._canary_sent_at: float | None = None  # set while an echo is awaited
        self._canary_echoed = 0  # the last token that came back
        self._canary_failure: str | None = None
        self._reader: gevent.Greenlet | None = None
        self._poller: gevent.Greenlet | None = None
        self._poll_due = Event()  # wakes the poller before its interval is up
        self._recheck_pending = False  # a forced re-read is owed since the last reconnect
        self.parked = 0  # waiters blocked in Watch.next, or parked in a lot, right now
        self.closing = False  # the worker is shutting down: nothing may block any more
        self.connected = False
        self.redis_down = False  # True once a connection attempt failed, until one succeeds
        self._first_attempt = Event()  # set after the first connection attempt, either way
        self.reconnects = 0
        self.fallback_polls = 0
        self._fallback_since: float | None = None  # while on database polling

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader and the fallback poller (idempotent; restarts one that died)."""
        if self._reader is None or self._reader.dead:
            if self._reader is not None:
                log.error("hub reader had stopped; restarting it")
            self._reader = gevent.spawn(self._run)
        if self._poller is None or self._poller.dead:
            self._poller = gevent.spawn(self._poll_loop)

    def stop(self) -> None:
        gevent.killall([g for g in (self._reader, self._poller) if g is not None])
        self._reader = self._poller = None
        self._mark_disconnected()

    def drain(self) -> None:
        """The worker is stopping: wake every waiter and handler with a `shutdown` delivery,
        so held waits answer with the current state and streams end cleanly."""
        self.closing = True
        for sub in list(self._subs.values()):
            self._deliver(sub, sub.name, "", SHUTDOWN, time.monotonic())

    def request_poll(self) -> None:
        """Read the watched channels from the database soon, even while connected.

        For when a publish failed although the hub is connected: its waiters would otherwise
        hear of the change only at their timeout.
        """
        self._poll_due.set()

    # -- registration ----------------------------------------------------------------------

    def watch(self, channel: str) -> Watch:
        """Register a waiter on `channel`. Deliveries after this call are seen by Watch.next.

        Returns once Redis has acknowledged the subscription, so a caller that reads state
        after this cannot miss a publish made after that read. If Redis does not confirm
        within confirm_timeout it returns anyway: the caller's final database read at its
        timeout, and the hub's re-read on reconnect, cover that case.
        """
        self.start()
        if not self._first_attempt.is_set():
            self._first_attempt.wait(self.confirm_timeout)
        sub, created = self._register(self._watch_kind, channel)
        sub.waiters += 1
        self._waiters += 1
        watch = Watch(self, sub)
        try:
            if created:
                self._send(_SUBSCRIBE[self._watch_kind], channel)
            if self.connected and not sub.confirmed.is_set():
                sub.confirmed.wait(self.confirm_timeout)
        except BaseException:
            watch.close()  # killed while registering: leave no waiter behind
            raise
        return watch

    def add_handler(
        self,
        name: str,
        callback: Callable[[Delivery], None],
        *,
        pattern: bool = False,
        like_watch: bool = False,
    ) -> Handler:
        """Call `callback(delivery)` in the hub greenlet for each message on a channel/pattern.

        Callbacks must be quick and must not block; hand real work to another greenlet.
        `like_watch`: the channel is subscribed the way watch() subscribes (sharded when the
        hub is), so handler and watchers share one subscription.
        """
        self.start()
        kind = PATTERN if pattern else self._watch_kind if like_watch else CHANNEL
        sub, created = self._register(kind, name)
        sub.handlers.append(callback)
        handler = Handler(sub, callback)
        if created:
            try:
                self._send(_SUBSCRIBE[kind], name)
            except BaseException:
                self.remove_handler(handler)
                raise
        return handler

    def remove_handler(self, handler: Handler) -> None:
        sub = handler.subscription
        if handler.callback in sub.handlers:
            sub.handlers.remove(handler.callback)
            self._drop_if_unused(sub)

    def add_poll_source(self, prefix: str, poll: PollSource) -> None:
        """Let the hub poll the database for channels `prefix + id` while Redis is away."""
        self._poll_sources[prefix] = poll

    def _register(self, kind: str, name: str) -> tuple[_Subscription, bool]:
        """The subscription of a channel or pattern, and whether it was just created (the
        caller then sends SUBSCRIBE, after counting itself in, so an interruption unwinds)."""
        sub = self._subs.get((kind, name))
        if sub is not None:
            return sub, False
        sub = self._subs[(kind, name)] = _Subscription(kind, name)
        return sub, True

    def _release_waiter(self, sub: _Subscription) -> None:
        sub.waiters -= 1
        self._waiters -= 1
        self._drop_if_unused(sub)

    def _drop_if_unused(self, sub: _Subscription) -> None:
        if sub.waiters or sub.handlers:
            return
        if self._subs.get((sub.kind, sub.name)) is sub:
            del self._subs[(sub.kind, sub.name)]
            self._send(_UNSUBSCRIBE[sub.kind], sub.name)

    # -- counts ----------------------------------------------------------------------------

    def count_parked(self, delta: int) -> None:
        """Requests held by a parking lot count as registered and parked waiters too."""
        self._waiters += delta
        self.parked += delta

    def stats(self) -> dict:
        channels = sum(1 for kind, _ in self._subs if kind != PATTERN)
        return {
            "connected": self.connected,
            "sharded": self.sharded,
            "channels": channels,
            "patterns": len(self._subs) - channels,
            "handlers": sum(len(s.handlers) for s in self._subs.values()),
            "waiters": self._waiters,
            "parked": self.parked,
            "reconnects": self.reconnects,
            "fallbackPolls": self.fallback_polls,
        }

    # -- the Redis side ----------------------------------------------------------------------

    def _send(self, *command: str) -> None:
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

    def _run(self) -> None:
        delay = 0.1
        announced_down = False
        while True:
            try:
                self._connect()
            except Exception as exc:
                self.redis_down = True
                self._first_attempt.set()
                if not announced_down:
                    log.warning(
                        "Redis unreachable at %s (%s): waits are answered by database polling "
                        "every %.1fs until it returns",
                        redact_url(self.redis_url),
                        exc,
                        self.poll_interval,
                        extra=fields(event="redis.down", fallback="on"),
                    )
                    announced_down = True
                gevent.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            delay = 0.1
            log.info(
                "Redis pub/sub connected at %s: waits are answered by pub/sub",
                redact_url(self.redis_url),
                extra=fields(event="redis.up", fallback="off"),
            )
            if announced_down:
                self.reconnects += 1
                metrics.hub_reconnects.inc()
                # Publishes made while we were away are lost: read the truth once.
                self._recheck_pending = True
                gevent.spawn(self._recheck_when_subscribed)
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
                    self.poll_interval,
                    extra=fields(event="redis.down", fallback="on"),
                )
                announced_down = True
            finally:
                self._mark_disconnected()

    def _connect(self) -> None:
        conn = self._connection_class(**self._connection_kwargs)
        conn.connect()
        with self._write_lock:
            channels = [name for kind, name in self._subs if kind == CHANNEL]
            conn.send_command("SUBSCRIBE", self._canary_channel, *channels)
            patterns = [name for kind, name in self._subs if kind == PATTERN]
            if patterns:
                conn.send_command("PSUBSCRIBE", *patterns)
            # One SSUBSCRIBE per channel: in a cluster one command may only name one slot.
            shards = [("SSUBSCRIBE", name) for kind, name in self._subs if kind == SHARD]
            if shards:
                conn.send_packed_command(conn.pack_commands(shards))
            self._conn = conn
            self._canary_token += 1  # a canary of the old connection can fail nothing here
            self._canary_sent_at = None
            self._canary_failure = None
            self.connected = True
            self.redis_down = False
        self._first_attempt.set()
        metrics.hub_connected.set(1)
        self._count_fallback_time(leaving=True)

    def _mark_disconnected(self) -> None:
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

    def _count_fallback_time(self, *, leaving: bool = False) -> None:
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
        next_canary = time.monotonic() + min(self.canary_interval, 1.0)
        last_frame = 0.0
        while self.connected and self._conn is conn:
            now = time.monotonic()
            if self._canary_failure:
                raise redis.ConnectionError(self._canary_failure)
            if self._canary_sent_at is None:
                if now >= next_canary:
                    self._send_canary(now)
                    next_canary = now + self.canary_interval
                wake_in = max(next_canary - now, 0.0)
            else:
                wake_in = max(self._canary_sent_at, last_frame) + self.canary_timeout - now
            # What has arrived is read first: under load the echo may sit behind thousands
            # of frames (subscribe confirmations), which is no sign of a lost subscription;
            # nor is a late echo while frames keep coming. Silence past the deadline is.
            if frames.wait(max(wake_in, 0.0)):
                self._dispatch(conn.read_response())
                last_frame = time.monotonic()
            elif (sent_at := self._canary_sent_at) is not None and (
                time.monotonic() >= max(sent_at, last_frame) + self.canary_timeout
            ):
                raise redis.ConnectionError(f"canary not echoed within {self.canary_timeout:.1f}s")
        raise redis.ConnectionError("write to the pub/sub connection failed")

    def _send_canary(self, now: float) -> None:
        self._canary_token += 1
        self._canary_sent_at = now
        gevent.spawn(self._publish_canary, self._canary_token)

    def _publish_canary(self, token: int) -> None:
        """Publish in a greenlet of its own: a frozen server must not block the reader.

        The echo is awaited from the moment Redis took the publish: under load the publish
        may queue for a command connection, which says nothing about the subscription. For
        the same reason a pool with no free connection skips this round instead of failing.
        """
        try:
            receivers = self._publisher.publish(self._canary_channel, str(token))
        except RedisError as exc:
            if token == self._canary_token and str(exc) == POOL_EXHAUSTED:
                log.debug("canary skipped: every command connection is busy")
                self._canary_sent_at = None
                return
            failure = f"canary publish failed: {exc}"
        else:
            failure = None if receivers else "canary reached no subscriber"
        if token != self._canary_token:
            return
        if failure:
            self._canary_failure = failure
        elif self._canary_echoed != token:
            self._canary_sent_at = time.monotonic()

    def _dispatch(self, response) -> None:
        if not isinstance(response, list):
            return
        kind = response[0]
        if kind == "message":
            if response[1] == self._canary_channel:
                if response[2] == str(self._canary_token):
                    self._canary_echoed = self._canary_token
                    self._canary_sent_at = None
                return
            sub = self._subs.get((CHANNEL, response[1]))
            self._deliver(sub, response[1], response[2], "redis", time.monotonic())
        elif kind == "smessage":
            sub = self._subs.get((SHARD, response[1]))
            self._deliver(sub, response[1], response[2], "redis", time.monotonic())
        elif kind == "pmessage":
            sub = self._subs.get((PATTERN, response[1]))
            self._deliver(sub, response[2], response[3], "redis", time.monotonic())
        elif kind in _CONFIRMATION_KIND:
            sub = self._subs.get((_CONFIRMATION_KIND[kind], response[1]))
            if sub is not None:
                sub.confirmed.set()

    def _deliver(
        self, sub: _Subscription | None, channel: str, data: str, source: str, received: float
    ) -> None:
        if sub is None:
            return  # a message that was in flight when we unsubscribed
        delivery = Delivery(channel, data, source, received)
        if sub.waiters:
            sub.broadcast.send(delivery)
        for callback in list(sub.handlers):
            try:
                callback(delivery)
            except Exception:
                log.exception("hub handler failed on %s", channel)

    # -- the database side (Redis away) ------------------------------------------------------

    def _recheck_when_subscribed(self) -> None:
        """After a reconnect, once Redis confirmed the re-subscriptions, ask for the re-read:
        a change committed after it is then published to a subscribed hub."""
        deadline = time.monotonic() + 2 * self.confirm_timeout
        for sub in list(self._subs.values()):
            if not sub.confirmed.wait(max(deadline - time.monotonic(), 0)):
                break
        self._poll_due.set()

    def _poll_loop(self) -> None:
        while True:
            self._poll_due.wait(self.poll_interval)
            asked = self._poll_due.is_set()
            self._poll_due.clear()
            force = self._recheck_pending
            if self.connected:
                self._count_fallback_time(leaving=True)
            else:
                self._count_fallback_time()
            if not (asked or force or not self.connected):
                continue
            try:
                if self.poll_once(force=force) and force:
                    self._recheck_pending = False  # else retried next interval
            except Exception:
                log.exception("fallback poll failed")

    def poll_once(self, *, force: bool = False) -> bool:
        """Read every watched channel's state with one batched query per poll source.

        Delivers the channels whose version changed since the last poll, or all of them when
        `force` (after a reconnect); waiters themselves decide whether a delivery is news.
        Returns False when a source failed.
        """
        ok = True
        for prefix, poll in self._poll_sources.items():
            watched = [
                name[len(prefix) :]
                for kind, name in self._subs
                if kind == self._watch_kind and name.startswith(prefix)
            ]
            if not watched:
                continue
            try:
                latest = poll(watched)
            except Exception as exc:
                log.warning("fallback database poll failed: %s", first_line(exc))
                ok = False
                continue
            self.fallback_polls += 1
            for ident, (version, data) in latest.items():
                sub = self._subs.get((self._watch_kind, prefix + ident))
                if sub is None or (sub.polled_version == version and not force):
                    continue
                sub.polled_version = version
                self._deliver(sub, prefix + ident, data, "poll", time.monotonic())
        return ok


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (database errors run to many), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
