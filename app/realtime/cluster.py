"""A Redis Cluster (REDIS_CLUSTER_NODES): which primary serves which slot, and the command
client.

The hub keeps a pub/sub connection per primary and subscribes each order channel on the
primary serving its slot: `Shards` is that map, read from CLUSTER SHARDS by `read_shards`.
Commands go through redis-py's RedisCluster, which follows slots itself; `ClusterCommands`
builds it on first use, so a worker starts (and answers from the database) while the
cluster is unreachable, as it does without a single Redis.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Callable, Iterable

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import Encoder
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

SLOTS = 16384


class Shards:
    """The online primaries ("host:port") and the slot ranges each serves."""

    def __init__(self, primaries: dict[str, Iterable[tuple[int, int]]] | None = None):
        self.primaries = {
            address: tuple(sorted(ranges)) for address, ranges in (primaries or {}).items()
        }
        ranges = sorted(
            (start, end, address)
            for address, spans in self.primaries.items()
            for start, end in spans
        )
        self._starts = [start for start, _, _ in ranges]
        self._ranges = ranges

    @property
    def complete(self) -> bool:
        """Every slot has an online primary."""
        covered = set()
        for start, end, _ in self._ranges:
            covered.update(range(start, end + 1))
        return len(covered) == SLOTS

    def owner(self, channel: str) -> str | None:
        """The primary serving `channel`'s slot, or None while none is online."""
        slot = key_slot(channel.encode())
        at = bisect.bisect_right(self._starts, slot) - 1
        if at >= 0:
            start, end, address = self._ranges[at]
            if start <= slot <= end:
                return address
        return None

    def channel_on(self, address: str, base: str) -> str:
        """A channel name built on `base` whose slot `address` serves (for its canary)."""
        # Tags up to 2**20: the numbers 0..109,757 alone already reach every slot.
        for n in range(1 << 20):
            name = f"{base}:{{{n}}}"
            if self.owner(name) == address:
                return name
        raise ValueError(f"{address} serves no slot")

    def __eq__(self, other) -> bool:
        return isinstance(other, Shards) and self.primaries == other.primaries

    def __repr__(self) -> str:
        return f"Shards({self.primaries})"


def parse_shards(reply) -> Shards:
    """Shards from a CLUSTER SHARDS reply, as redis-py returns it (maps or flat pairs)."""
    primaries = {}
    for shard in reply:
        shard = _as_map(shard)
        slots = [int(slot) for slot in shard["slots"]]
        for node in map(_as_map, shard["nodes"]):
            if node["role"] == "master" and node["health"] == "online" and slots:
                address = f"{node.get('ip') or node['endpoint']}:{node['port']}"
                primaries[address] = list(zip(slots[::2], slots[1::2], strict=True))
    return Shards(primaries)


def _as_map(item) -> dict:
    # Keys and string values as text, whether the reply was decoded or not.
    pairs = item.items() if isinstance(item, dict) else zip(item[::2], item[1::2], strict=True)
    return {_text(key): _text(value) for key, value in pairs}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_shards(addresses: Iterable[tuple[str, int]], **options) -> Shards:
    """The cluster's layout as the first node that answers reports it.

    A node cut off from the others may report a stale layout; a failed primary is reported
    by the others as failed, so it is left out until it comes back as a replica.
    """
    failure: Exception | None = None
    for host, port in addresses:
        # No retries: a node that refuses is skipped at once for the next one (redis-py's
        # default would back off for seconds on each dead node, a failover's first).
        client = redis.Redis(
            host=host, port=port, decode_responses=True, retry=Retry(NoBackoff(), 0), **options
        )
        try:
            return parse_shards(client.execute_command("CLUSTER SHARDS"))
        except redis.RedisError as exc:
            failure = exc
        finally:
            client.close()
    raise redis.ConnectionError(f"no Redis Cluster node answered: {failure}")


def _as_redis_error(method: Callable) -> Callable:
    """`method`, raising redis.ConnectionError where RedisCluster raises its own exception
    (not a RedisError: no node reachable, a slot without a primary during a failover), so
    callers treat it as they treat Redis being away."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except RedisClusterException as exc:
            raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc

    return call


class ClusterCommands:
    """redis-py's RedisCluster, built on first use and on the first use after it could not
    be (at most once a second): every attribute is the client's, its errors RedisErrors."""

    RETRY_AFTER = 1.0

    def __init__(self, build: Callable[[], RedisCluster]):
        self._build = build
        self._cluster: RedisCluster | None = None
        self._next_try = 0.0
        self._failure = ""

    @property
    def cluster(self) -> RedisCluster:
        """The client; redis.ConnectionError while it cannot be built."""
        if self._cluster is None:
            now = time.monotonic()
            if now < self._next_try:
                raise redis.ConnectionError(self._failure)
            try:
                self._cluster = self._build()
            except (RedisClusterException, redis.RedisError) as exc:
                self._next_try = now + self.RETRY_AFTER
                self._failure = f"Redis Cluster unreachable: {exc}"
                raise redis.ConnectionError(self._failure) from exc
        return self._cluster

    def __getattr__(self, name: str):
        attribute = getattr(self.cluster, name)
        return _as_redis_error(attribute) if callable(attribute) else attribute

    def pipeline(self, *args, **kwargs) -> _Pipeline:
        return _Pipeline(self.cluster.pipeline(*args, **kwargs))

    # A script registered at start (a lease's renewal, the limiter's) must not reach the
    # cluster then: it is bound to this object, and finds the client when it runs.
    def register_script(self, script: str) -> Script:
        return Script(self, script)

    def get_encoder(self) -> Encoder:
        return Encoder("utf-8", "strict", False)


class _Pipeline:
    """A cluster pipeline whose `execute` raises RedisErrors only."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def execute(self, *args, **kwargs):
        return _as_redis_error(self._pipe.execute)(*args, **kwargs)
