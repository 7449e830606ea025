"""The hub's connections on a Redis Cluster: classic pub/sub on any node, and one connection
per primary for the order channels of its slots, following the cluster's layout."""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from app.logs import fields, first_line

from ..cluster import Shards
from ..redis_target import RedisTarget
from .connection import PubSubConnection, Share
from .links import Links
from .registry import CHANNEL, PATTERN, SHARD, Subscriptions

log = logging.getLogger(__package__)


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
            sub.unconfirm()
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
