"""Hub: what the rest of the app sees of the subscriber hub; it composes the parts.

Subscriptions (registry) hold who listens where; Links hold the pub/sub connections (one,
or on a Redis Cluster one per primary and one for classic pub/sub), each read by a
PubSubConnection that dispatches into the subscriptions, its Canary watching that the
subscription still answers; FallbackPoller reads the database while a connection is down,
and once more after it returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
import redis

from ..redis_target import RedisTarget
from .canary import Canary
from .cluster_links import ClusterLinks
from .links import Links
from .poller import FallbackPoller, PollSource
from .registry import (
    CHANNEL,
    PATTERN,
    SHARD,
    SHUTDOWN,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Delivery,
    Handler,
    Subscription,
    Subscriptions,
    Watch,
    deliver,
)

log = logging.getLogger(__package__)


class Hub:
    def __init__(
        self,
        target: RedisTarget | str,
        *,
        publisher: redis.Redis | None = None,
        poll_interval: float = 2.0,
        safety_poll_interval: float = 0.0,
        canary_interval: float = 5.0,
        canary_timeout: float = 3.0,
        reconnect_max_delay: float = 2.0,
        connect_timeout: float = 0.5,
        socket_timeout: float = 5.0,
        confirm_timeout: float = 1.0,
        sharded: bool = False,
    ):
        if isinstance(target, str):
            target = RedisTarget(
                target, connect_timeout=connect_timeout, socket_timeout=socket_timeout
            )
        self.target = target
        # Waiters' channels as sharded channels: their publishers must SPUBLISH. Handlers'
        # channels and patterns (few, deployment-wide) stay on classic pub/sub. A cluster
        # has only sharded ones: a classic publish reaches every node of it.
        self.sharded = sharded or target.cluster
        self._watch_kind = SHARD if self.sharded else CHANNEL
        self.confirm_timeout = confirm_timeout
        self._subs = Subscriptions(unsubscribe=self._unsubscribe)
        # Canaries publish through the command connections that application publishes use.
        publisher = publisher or target.command_client(
            max_connections=2,
            timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
        )

        def canary(sharded: bool) -> Canary:
            return Canary(
                publisher.spublish if sharded else publisher.publish,
                interval=canary_interval,
                timeout=canary_timeout,
                counts_receivers=sharded or not target.cluster,
            )

        self._links = (ClusterLinks if target.cluster else Links)(
            target,
            self._subs,
            canary=canary,
            on_reconnect=self._recheck_after_reconnect,
            poll_interval=poll_interval,
            reconnect_max_delay=reconnect_max_delay,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
        )
        self._fallback = FallbackPoller(
            self._subs,
            self._links,
            watch_kind=self._watch_kind,
            interval=poll_interval,
            safety_interval=safety_poll_interval,
            confirm_timeout=confirm_timeout,
        )
        self._poller: gevent.Greenlet | None = None
        self.closing = False  # the worker is shutting down: nothing may block any more

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the readers and the fallback poller (idempotent; restarts one that died)."""
        self._links.start()
        if self._poller is None or self._poller.dead:
            self._poller = gevent.spawn(self._fallback.run)

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.kill()
            self._poller = None
        self._links.stop()

    def drain(self) -> None:
        """The worker is stopping: wake every waiter and handler with a `shutdown` delivery,
        so held waits answer with the current state and streams end cleanly."""
        self.closing = True
        for sub in list(self._subs.values()):
            deliver(sub, sub.name, "", SHUTDOWN, time.monotonic())

    def request_poll(self) -> None:
        """Read the watched channels from the database soon, even while connected.

        For when a publish failed although the hub is connected: its waiters would otherwise
        hear of the change only at their timeout.
        """
        self._fallback.request()

    # -- registration ----------------------------------------------------------------------

    def watch(self, channel: str) -> Watch:
        """Register a waiter on `channel`. Deliveries after this call are seen by Watch.next.

        Returns once Redis has acknowledged the subscription, so a caller that reads state
        after this cannot miss a publish made after that read. If Redis does not confirm
        within confirm_timeout it returns anyway: the caller's final database read at its
        timeout, and the hub's re-read on reconnect, cover that case.
        """
        self.start()
        if not self._links.first_attempt.is_set():
            self._links.first_attempt.wait(self.confirm_timeout)
        kind = self._watch_kind
        sub, created = self._subs.add_waiter(kind, channel)
        watch = Watch(self._subs, sub)
        try:
            if created:
                self._links.send(SUBSCRIBE[kind], kind, channel)
            if self._links.connected_for(kind, channel) and not sub.confirmed.is_set():
                sub.confirmed.wait(self.confirm_timeout)
        except BaseException:
            watch.close()  # killed while registering: leave no waiter behind
            raise
        if self.closing:  # after the drain: end at once, as the waiters held then did
            deliver(sub, channel, "", SHUTDOWN, time.monotonic())
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
        handler, created = self._subs.add_handler(kind, name, callback)
        if created:
            try:
                self._links.send(SUBSCRIBE[kind], kind, name)
            except BaseException:
                self.remove_handler(handler)
                raise
        if self.closing:  # after the drain; called as the hub calls it, not in this caller
            gevent.spawn(callback, Delivery(name, "", SHUTDOWN, time.monotonic()))
        return handler

    def remove_handler(self, handler: Handler) -> None:
        self._subs.remove_handler(handler)

    def add_poll_source(self, prefix: str, poll: PollSource, suffix: str = "") -> None:
        """Let the hub poll the database for channels `prefix + id + suffix` while Redis is
        away."""
        self._fallback.add_source(prefix, poll, suffix)

    def poll_once(self, *, force: bool = False) -> bool:
        """Read every watched channel from the database now; False when a source failed."""
        return self._fallback.poll_once(force=force)

    # -- how the parts meet ----------------------------------------------------------------

    def _unsubscribe(self, sub: Subscription) -> None:
        self._links.send(UNSUBSCRIBE[sub.kind], sub.kind, sub.name)

    def _recheck_after_reconnect(self) -> None:
        self._fallback.recheck_after_reconnect()

    # -- state and counts ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._links.connected

    @property
    def redis_down(self) -> bool:
        """True once a connection attempt failed, until one succeeds."""
        return self._links.redis_down

    @property
    def reconnects(self) -> int:
        return self._links.reconnects

    @property
    def fallback_polls(self) -> int:
        return self._fallback.polls

    @property
    def parked(self) -> int:
        """Waiters blocked in Watch.next, or parked in a lot, right now."""
        return self._subs.parked

    def count_parked(self, delta: int) -> None:
        """Requests held by a parking lot count as registered and parked waiters too."""
        self._subs.waiters += delta
        self._subs.parked += delta

    def stats(self) -> dict:
        channels = sum(1 for kind, _ in self._subs if kind != PATTERN)
        return {
            "connected": self.connected,
            "sharded": self.sharded,
            "channels": channels,
            "patterns": len(self._subs) - channels,
            "handlers": sum(len(s.handlers) for s in self._subs.values()),
            "waiters": self._subs.waiters,
            "parked": self.parked,
            "reconnects": self.reconnects,
            "primary": self._links.primary,
            "primaryChanges": self._links.primary_changes,
            "fallbackPolls": self.fallback_polls,
        }
