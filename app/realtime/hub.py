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

log = logging.getLogger(__name__)

CHANNEL = "channel"
PATTERN = "pattern"
_SUBSCRIBE = {CHANNEL: "SUBSCRIBE", PATTERN: "PSUBSCRIBE"}
_UNSUBSCRIBE = {CHANNEL: "UNSUBSCRIBE", PATTERN: "PUNSUBSCRIBE"}
_CONFIRMATION_KIND = {"subscribe": CHANNEL, "psubscribe": PATTERN}

# A poll source maps watched ids (channel names without the source's prefix) to
# (version, payload) for the ids that exist; payload has the shape of a published message.
PollSource = Callable[[list[str]], dict[str, tuple[int, str]]]


class Delivery(NamedTuple):
    channel: str
    data: str
    source: str  # "redis" (pub/sub) or "poll" (database poll while Redis is away)


class _Signal:
    """One wake-up shared by every waiter of a channel.

    Signals are chained: a waiter that wakes follows `next`, so a delivery that lands while it
    is busy with the previous one is never skipped.
    """

    __slots__ = ("event", "delivery", "next")

    def __init__(self):
        self.event = Event()
        self.delivery: Delivery | None = None
        self.next: _Signal | None = None


class _Subscription:
    __slots__ = ("kind", "name", "waiters", "handlers", "signal", "confirmed", "polled_version")

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name
        self.waiters = 0
        self.handlers: list[Callable[[Delivery], None]] = []
        self.signal = _Signal()
        self.confirmed = Event()  # set when Redis acknowledged the SUBSCRIBE
        self.polled_version: int | None = None


class Watch:
    """A waiter's place on one channel. Use as a context manager so it is always released."""

    __slots__ = ("_hub", "_sub", "_signal")

    def __init__(self, hub: Hub, sub: _Subscription):
        self._hub = hub
        self._sub = sub
        self._signal = sub.signal

    def next(self, timeout: float) -> Delivery | None:
        """Block until the next delivery on the channel, or None once `timeout` seconds pass."""
        signal = self._signal
        if not signal.event.wait(timeout):
            return None
        self._signal = signal.next
        return signal.delivery

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
    ):
        self.redis_url = redis_url
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
        self._publisher = publisher or redis.Redis.from_url(
            redis_url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        self._canary_channel = f"hub:canary:{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._canary_token = 0
        self._canary_sent_at: float | None = None  # set while an echo is awaited
        self._canary_failure: str | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self.connected = False
        self.redis_down = False  # True once a connection attempt failed, until one succeeds
        self._first_attempt = Event()  # set after the first connection attempt, either way
        self.reconnects = 0
        self.fallback_polls = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader and the fallback poller; call once per worker process (idempotent)."""
        if self._greenlets:
            return
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._poll_loop)]

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []
        self._mark_disconnected()

    @property
    def started(self) -> bool:
        return bool(self._greenlets)

    # -- registration ----------------------------------------------------------------------

    def watch(self, channel: str) -> Watch:
        """Register a waiter on `channel`. Deliveries after this call are seen by Watch.next.

        Returns once Redis has acknowledged the subscription (bounded by confirm_timeout), so
        a caller that checks state after this cannot miss a publish made after that check.
        """
        self.start()
        if not self._first_attempt.is_set():
            self._first_attempt.wait(self.confirm_timeout)
        sub = self._acquire(CHANNEL, channel)
        sub.waiters += 1
        self._waiters += 1
        watch = Watch(self, sub)
        if self.connected and not sub.confirmed.is_set():
            sub.confirmed.wait(self.confirm_timeout)
        return watch

    def add_handler(
        self, name: str, callback: Callable[[Delivery], None], *, pattern: bool = False
    ) -> Handler:
        """Call `callback(delivery)` in the hub greenlet for each message on a channel/pattern.

        Callbacks must be quick and must not block; hand real work to another greenlet.
        """
        self.start()
        sub = self._acquire(PATTERN if pattern else CHANNEL, name)
        sub.handlers.append(callback)
        return Handler(sub, callback)

    def remove_handler(self, handler: Handler) -> None:
        sub = handler.subscription
        if handler.callback in sub.handlers:
            sub.handlers.remove(handler.callback)
            self._drop_if_unused(sub)

    def add_poll_source(self, prefix: str, poll: PollSource) -> None:
        """Let the hub poll the database for channels `prefix + id` while Redis is away."""
        self._poll_sources[prefix] = poll

    def _acquire(self, kind: str, name: str) -> _Subscription:
        sub = self._subs.get((kind, name))
        if sub is None:
            sub = self._subs[(kind, name)] = _Subscription(kind, name)
            self._send(_SUBSCRIBE[kind], name)
        return sub

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

    def stats(self) -> dict:
        channels = sum(1 for kind, _ in self._subs if kind == CHANNEL)
        return {
            "connected": self.connected,
            "channels": channels,
            "patterns": len(self._subs) - channels,
            "handlers": sum(len(s.handlers) for s in self._subs.values()),
            "waiters": self._waiters,
            "reconnects": self.reconnects,
            "fallbackPolls": self.fallback_polls,
        }

    # -- the Redis side ----------------------------------------------------------------------

    def _send(self, *command: str) -> None:
        """Write a command on the pub/sub connection; while disconnected, reconnect re-sends."""
        with self._write_lock:
            if not self.connected:
                return
            try:
                self._conn.send_command(*command)
            except (RedisError, OSError) as exc:
                # The reader notices the broken connection and reconnects, re-subscribing all.
                log.debug("hub write failed: %s", exc)
                self.connected = False

    def _run(self) -> None:
        delay = 0.1
        announced_down = False
        while True:
            try:
                self._connect()
            except (RedisError, OSError) as exc:
                self.redis_down = True
                self._first_attempt.set()
                if not announced_down:
                    log.warning(
                        "Redis unreachable at %s (%s): waits are answered by database polling "
                        "every %.1fs until it returns",
                        redact_url(self.redis_url),
                        exc,
                        self.poll_interval,
                    )
                    announced_down = True
                gevent.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            delay = 0.1
            log.info(
                "Redis pub/sub connected at %s: waits are answered by pub/sub",
                redact_url(self.redis_url),
            )
            if announced_down:
                self.reconnects += 1
                # Publishes made while we were away are lost: read the truth once.
                gevent.spawn(self.poll_once, force=True)
            announced_down = False
            try:
                self._read_loop()
            except (RedisError, OSError) as exc:
                log.warning(
                    "Redis pub/sub connection lost (%s): falling back to database "
                    "polling every %.1fs",
                    exc,
                    self.poll_interval,
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
            self._conn = conn
            self._canary_sent_at = None
            self._canary_failure = None
            self.connected = True
            self.redis_down = False
        self._first_attempt.set()

    def _mark_disconnected(self) -> None:
        with self._write_lock:
            self.connected = False
            conn, self._conn = self._conn, None
            for sub in self._subs.values():
                sub.confirmed.clear()
        if conn is not None:
            conn.disconnect()

    def _read_loop(self) -> None:
        conn = self._conn
        next_canary = time.monotonic() + min(self.canary_interval, 1.0)
        while self.connected:
            now = time.monotonic()
            if self._canary_failure:
                raise redis.ConnectionError(self._canary_failure)
            if self._canary_sent_at is None:
                if now >= next_canary:
                    self._send_canary(now)
                    next_canary = now + self.canary_interval
                wake_in = max(next_canary - now, 0.0)
            else:
                wake_in = self._canary_sent_at + self.canary_timeout - now
                if wake_in <= 0:
                    raise redis.ConnectionError(
                        f"canary not echoed within {self.canary_timeout:.1f}s"
                    )
            if conn.can_read(timeout=max(wake_in, 0.01)):
                self._dispatch(conn.read_response())
        raise redis.ConnectionError("write to the pub/sub connection failed")

    def _send_canary(self, now: float) -> None:
        self._canary_token += 1
        self._canary_sent_at = now
        gevent.spawn(self._publish_canary, self._canary_token)

    def _publish_canary(self, token: int) -> None:
        """Publish in a greenlet of its own: a frozen server must not block the reader."""
        try:
            receivers = self._publisher.publish(self._canary_channel, str(token))
        except RedisError as exc:
            failure = f"canary publish failed: {exc}"
        else:
            failure = None if receivers else "canary reached no subscriber"
        if failure and token == self._canary_token:
            self._canary_failure = failure

    def _dispatch(self, response) -> None:
        if not isinstance(response, list):
            return
        kind = response[0]
        if kind == "message":
            if response[1] == self._canary_channel:
                if response[2] == str(self._canary_token):
                    self._canary_sent_at = None
                return
            self._deliver(self._subs.get((CHANNEL, response[1])), response[1], response[2], "redis")
        elif kind == "pmessage":
            self._deliver(self._subs.get((PATTERN, response[1])), response[2], response[3], "redis")
        elif kind in _CONFIRMATION_KIND:
            sub = self._subs.get((_CONFIRMATION_KIND[kind], response[1]))
            if sub is not None:
                sub.confirmed.set()

    def _deliver(self, sub: _Subscription | None, channel: str, data: str, source: str) -> None:
        if sub is None:
            return  # a message that was in flight when we unsubscribed
        delivery = Delivery(channel, data, source)
        if sub.waiters:
            signal, sub.signal = sub.signal, _Signal()
            signal.next = sub.signal
            signal.delivery = delivery
            signal.event.set()
        for callback in list(sub.handlers):
            try:
                callback(delivery)
            except Exception:
                log.exception("hub handler failed on %s", channel)

    # -- the database side (Redis away) ------------------------------------------------------

    def _poll_loop(self) -> None:
        while True:
            gevent.sleep(self.poll_interval)
            if not self.connected:
                self.poll_once()

    def poll_once(self, *, force: bool = False) -> None:
        """Read every watched channel's state with one batched query per poll source.

        Delivers the channels whose version changed since the last poll, or all of them when
        `force` (after a reconnect); waiters themselves decide whether a delivery is news.
        """
        for prefix, poll in self._poll_sources.items():
            watched = [
                name[len(prefix) :]
                for kind, name in self._subs
                if kind == CHANNEL and name.startswith(prefix)
            ]
            if not watched:
                continue
            try:
                latest = poll(watched)
            except Exception as exc:
                log.warning("fallback database poll failed: %s", str(exc).splitlines()[0])
                continue
            self.fallback_polls += 1
            for ident, (version, data) in latest.items():
                sub = self._subs.get((CHANNEL, prefix + ident))
                if sub is None or (sub.polled_version == version and not force):
                    continue
                sub.polled_version = version
                self._deliver(sub, prefix + ident, data, "poll")
