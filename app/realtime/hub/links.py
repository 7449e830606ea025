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
from redis.exceptions import RedisError

from app import metrics
from app.logs import fields, first_line

from ..cluster import Shards
from ..redis_adapter import pubsub_connection_options
from ..redis_target import RedisTarget
from .canary import Canary
from .connection import PubSubConnection, Share
from .registry import CHANNEL, PATTERN, SHARD, Subscriptions

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


class ShardShare(Share):
    """The order channels whose slots one primary serves."""

    canary_kind = SHARD

    def __init__(self, address: str, shards: Callable[[], Shards]):
        super().__init__(frozenset((SHARD,)))
        self.address = address
        self._shards = shards

    def owns(self, kind: str, name: str) -> bool:
        return kind == SHARD and self._shards().owner(name) == self.address

    def canary_channel(self, base: str) -> str:
        return self._shards().channel_on(self.address, base)


class ClusterLinks(Links):
    """The connections of a Redis Cluster: classic pub/sub on any node, and one connection
    per primary for the order channels of its slots.

    The layout comes from CLUSTER SHARDS: read at start, when a connection to a primary is
    lost, when a server moves a channel away (its `sunsubscribe`, or -MOVED to an
    SSUBSCRIBE), and every REFRESH_INTERVAL seconds, at most every MIN_GAP seconds. When it
    changed, a promoted primary gets a connection and a failed one's is dropped, and every
    watched channel whose slot changed primary is subscribed on its new one; once Redis
    confirmed them the database is re-read for every watched channel, as after any
    reconnection, so what was published during the move is not missed.
    """

    MAIN_SHARE = Share(frozenset((CHANNEL, PATTERN)))
    REFRESH_INTERVAL = 10.0
    # While a primary is unreachable or slots have none: how often the layout is re-read.
    RECOVERY_INTERVAL = 0.25
    # A reshard moves slots one by one: follow it in steps, not once per slot.
    MIN_GAP = 0.1

    def __init__(self, target: RedisTarget, subscriptions: Subscriptions, **options):
        self.shards = Shards()
        super().__init__(target, subscriptions, **options)
        self._refresh_due = Event()
        self._layout_read = Event()
        self._watcher: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._watcher is None or self._watcher.dead:
            self._watcher = gevent.spawn(self._watch_layout)
        super().start()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher = None
        super().stop()

    def connection_for(self, kind: str, name: str) -> PubSubConnection | None:
        if kind != SHARD:
            return self.main
        owner = self.shards.owner(name)
        return self._connections.get(owner) if owner is not None else None

    def topology_changed(self) -> None:
        self._refresh_due.set()

    @property
    def complete(self) -> bool:
        return self.shards.complete

    @property
    def first_attempt(self) -> Event:
        return self._layout_read

    def _state_changed(self) -> None:
        super()._state_changed()
        if not self.connected:
            self._refresh_due.set()

    def _note_primary(self) -> None:
        self.primary = ",".join(sorted(self.shards.primaries))

    def _watch_layout(self) -> None:
        while True:
            self.refresh()
            if not self._layout_read.is_set():
                for connection in list(self._connections.values()):
                    connection.first_attempt.wait(1.0)
                self._layout_read.set()
            recovering = not self.connected
            self._refresh_due.wait(self.RECOVERY_INTERVAL if recovering else self.REFRESH_INTERVAL)
            self._refresh_due.clear()
            gevent.sleep(self.MIN_GAP)

    def refresh(self) -> None:
        """Read the layout; follow what changed."""
        try:
            shards = self.target.read_shards(list(self.shards.primaries))
        except RedisError as exc:
            log.debug("cluster layout not read: %s", first_line(exc))
            return
        if shards == self.shards:
            return
        before, self.shards = self.shards, shards
        started = bool(before.primaries)
        for address in set(before.primaries) - set(shards.primaries):
            self._retire(address)
            self._failover(f"Redis Cluster primary {address} left the cluster's primaries")
        for address in shards.primaries:
            if address not in before.primaries:
                self._add(
                    address,
                    self.target.node_connection_factory(address, **self._options),
                    ShardShare(address, lambda: self.shards),
                    sharded_canary=True,
                    late=started,
                )
            elif shards.owner(self._connections[address].canary_channel) != address:
                self._reconnect(address)  # its canary's slot moved away with the rest
        if started and self._move_channels(before):
            self._on_reconnect()  # re-read once the moved channels are confirmed
        self.start()
        self._state_changed()

    def _move_channels(self, before: Shards) -> int:
        """Subscribe each watched channel whose slot changed primary on its new primary."""
        moved = 0
        for sub in list(self._subs.values()):
            if sub.kind != SHARD:
                continue
            old, new = before.owner(sub.name), self.shards.owner(sub.name)
            if old == new:
                continue
            moved += new is not None  # else polled until its slot has a primary again
            sub.confirmed.clear()
            if old in self._connections:  # the server may have dropped it already
                self._connections[old].send("SUNSUBSCRIBE", sub.name)
            if new in self._connections:
                self._connections[new].send("SSUBSCRIBE", sub.name)
        if moved:
            log.info(
                "%d watched channel(s) moved to another primary: subscribed there",
                moved,
                extra=fields(event="redis.slots_moved", channels=moved),
            )
        return moved
