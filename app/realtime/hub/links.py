"""The hub's pub/sub connections, and which one carries each subscription.

On one Redis (or the primary Sentinel names) a single connection carries everything. On a
Redis Cluster (ClusterLinks) one connection carries classic pub/sub (the admin channels, the
`service:*` pattern, its canary) on any node, and one connection per primary carries the
order channels of that primary's slots, each with a canary of its own in those slots: a
worker holds shards + 1 pub/sub connections whatever the number of waits.

The hub is "connected" only while every connection is, and every slot has a primary:
otherwise the poller reads the database for every watched channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from app import metrics
from app.logs import fields

from ..redis_adapter import pubsub_connection_options
from ..redis_target import RedisTarget
from .canary import Canary
from .connection import PubSubConnection, Share
from .registry import Subscriptions

log = logging.getLogger(__package__)


class Links:
    """The connections of a single Redis: one, carrying every subscription."""

    MAIN_SHARE = Share()

    def __init__(
        self,
        target: RedisTarget,
        subscriptions: Subscriptions,
        *,
        canary: Callable[[bool], Canary],
        on_reconnect: Callable[[], None],
        poll_interval: float,
        reconnect_max_delay: float,
        connect_timeout: float,
        socket_timeout: float,
    ):
        self.target = target
        self._subs = subscriptions
        self._make_canary = canary  # (sharded) -> a new canary
        self._on_reconnect = on_reconnect
        self._poll_interval = poll_interval
        self._reconnect_max_delay = reconnect_max_delay
        self._options = pubsub_connection_options(
            connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        self._connections: dict[str, PubSubConnection] = {}
        self._readers: dict[str, gevent.Greenlet] = {}
        self._retired_reconnects = 0  # of connections no longer wanted
        self._was_connected = False  # as of the last state change
        self._fallback_since: float | None = time.monotonic()  # while not connected
        # Which server the connection reached last ("host:port"), and how often that changed:
        # under Sentinel, failovers.
        self.primary: str | None = None
        self.primary_changes = 0
        self.main = self._add(
            target.describe(), target.connection_factory(**self._options), self.MAIN_SHARE
        )

    # -- the connections -------------------------------------------------------------------

    def _add(
        self, name: str, factory, share: Share, *, sharded_canary=False, late=False
    ) -> PubSubConnection:
        connection = PubSubConnection(
            name,
            factory,
            share,
            self._subs,
            self._make_canary(sharded_canary),
            on_reconnect=self._on_reconnect,
            on_state=self._state_changed,
            on_moved=self.topology_changed,
            poll_interval=self._poll_interval,
            reconnect_max_delay=self._reconnect_max_delay,
            reconnect_at_first=late,
        )
        self._connections[name] = connection
        return connection

    def _reconnect(self, name: str) -> None:
        """Connect again and re-subscribe, then re-read as after any reconnection."""
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.kill()
        connection = self._connections[name]
        connection.mark_disconnected()
        connection.reread_on_connect()
        self.start()

    def _retire(self, name: str) -> None:
        connection = self._connections.pop(name)
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.kill()
        connection.mark_disconnected()
        self._retired_reconnects += connection.reconnects

    def start(self) -> None:
        """Start each connection's reader (idempotent; restarts one that died)."""
        for name, connection in self._connections.items():
            reader = self._readers.get(name)
            if reader is None or reader.dead:
                if reader is not None:
                    log.error("hub reader of %s had stopped; restarting it", name)
                self._readers[name] = gevent.spawn(connection.run)

    def stop(self) -> None:
        gevent.killall(list(self._readers.values()))
        self._readers.clear()
        self.mark_disconnected()

    def mark_disconnected(self) -> None:
        for connection in list(self._connections.values()):
            connection.mark_disconnected()

    def connection_for(self, kind: str, name: str) -> PubSubConnection | None:
        return self.main

    def send(self, command: str, kind: str, name: str) -> None:
        connection = self.connection_for(kind, name)
        if connection is not None:
            connection.send(command, name)

    def connected_for(self, kind: str, name: str) -> bool:
        connection = self.connection_for(kind, name)
        return connection is not None and connection.connected

    def topology_changed(self) -> None:
        """A server said a channel is served elsewhere: only a cluster has elsewhere."""

    # -- state -----------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every subscription has a connection to go on."""
        return True

    @property
    def first_attempt(self) -> Event:
        return self.main.first_attempt

    @property
    def redis_down(self) -> bool:
        return any(c.redis_down for c in self._connections.values())

    @property
    def reconnects(self) -> int:
        return self._retired_reconnects + sum(c.reconnects for c in self._connections.values())

    @property
    def connected(self) -> bool:
        return self.complete and all(c.connected for c in self._connections.values())

    def _state_changed(self) -> None:
        connected = self.connected
        if connected and not self._was_connected:
            self._note_primary()
        self._was_connected = connected
        metrics.hub_connected.set(1 if connected else 0)
        self.count_fallback_time(leaving=connected)

    def _note_primary(self) -> None:
        address = self.main.address
        if self.primary is not None and address != self.primary:
            self._failover(f"Redis primary is now {address} (was {self.primary})")
        self.primary = address

    def _failover(self, message: str) -> None:
        self.primary_changes += 1
        metrics.redis_primary_changes.inc()
        log.warning(message, extra=fields(event="redis.failover"))

    def count_fallback_time(self, *, leaving: bool = False) -> None:
        """Add the time spent on database polling since the last count to the metric."""
        now = time.monotonic()
        if self._fallback_since is not None:
            metrics.fallback_mode_seconds.inc(now - self._fallback_since)
        self._fallback_since = None if leaving else now
