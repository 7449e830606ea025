"""Where this process's Redis is: one server at REDIS_URL, the primary that Redis Sentinel
names (REDIS_SENTINELS, REDIS_SENTINEL_MASTER), or a Redis Cluster (REDIS_CLUSTER_NODES).

Every Redis connection of the process is made here: the command pool (commands, publishes,
the limiter, leases) and the hub's pub/sub connections. Under Sentinel each connection asks
the sentinels for the primary when it connects, so after a failover the next connection
goes to the new primary: the hub reconnects, re-subscribes and re-reads as after any loss
of Redis, and the pool drops its idle connections to the old one (redis-py's
SentinelConnectionPool). REDIS_URL then gives only the database number and the password.
On a cluster, commands go through redis-py's RedisCluster (app/realtime/cluster.py) and the
hub connects to nodes by address; REDIS_URL gives only the password.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from app.config.topology import host_port
from app.logs import redact_url

from .cluster import ClusterCommands, Shards, read_shards
from .redis_adapter import (
    BlockingSentinelPool,
    CheckedWithoutYielding,
    SentinelCheckedWithoutYielding,
    connection_class_for,
)


class RedisTarget:
    def __init__(
        self,
        url: str,
        *,
        sentinels: Sequence[str] = (),
        master: str = "",
        sentinel_password: str = "",
        cluster_nodes: Sequence[str] = (),
        connect_timeout: float = 0.5,
        socket_timeout: float = 5.0,
    ):
        self.url = url
        self.master = master
        self._sentinel = None
        self._cluster_nodes = [host_port(address) for address in cluster_nodes]
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        if sentinels:
            addresses = [host_port(address) for address in sentinels]
            self._sentinel = Sentinel(
                addresses,
                socket_timeout=socket_timeout,
                sentinel_kwargs={
                    "socket_timeout": connect_timeout,
                    "socket_connect_timeout": connect_timeout,
                    **({"password": sentinel_password} if sentinel_password else {}),
                },
            )
            self._sentinels = ",".join(sentinels)

    @classmethod
    def from_config(cls, cfg) -> RedisTarget:
        return cls(
            cfg["REDIS_URL"],
            sentinels=cfg["REDIS_SENTINELS"],
            master=cfg["REDIS_SENTINEL_MASTER"],
            sentinel_password=cfg["REDIS_SENTINEL_PASSWORD"],
            cluster_nodes=cfg["REDIS_CLUSTER_NODES"],
            connect_timeout=cfg["REDIS_CONNECT_TIMEOUT"],
            socket_timeout=cfg["REDIS_SOCKET_TIMEOUT"],
        )

    @property
    def sentinel(self) -> bool:
        return self._sentinel is not None

    @property
    def cluster(self) -> bool:
        return bool(self._cluster_nodes)

    def describe(self) -> str:
        """For logs: no password."""
        if self.cluster:
            return "the Redis Cluster of " + ",".join(f"{h}:{p}" for h, p in self._cluster_nodes)
        if self._sentinel is None:
            return redact_url(self.url)
        return f"the primary of {self.master!r} (Sentinel at {self._sentinels})"

    def command_client(self, *, max_connections: int, **options) -> redis.Redis:
        """The client for commands: at most `max_connections` connections (per node on a
        cluster); callers wait `timeout` for one to free up."""
        if not self.cluster:
            pool = self.pool(blocking=True, max_connections=max_connections, **options)
            return redis.Redis(connection_pool=pool)
        first, *others = self._cluster_nodes
        auth = {key: parse_url(self.url).get(key) for key in ("username", "password")}
        build = functools.partial(
            RedisCluster,
            # url: redis-py then makes each node's pool of connection_pool_class.
            url=f"redis://{first[0]}:{first[1]}/0",
            startup_nodes=[ClusterNode(host, port) for host, port in others],
            connection_pool_class=redis.BlockingConnectionPool,
            connection_class=CheckedWithoutYielding,
            max_connections=max_connections,
            **{key: value for key, value in auth.items() if value},
            **options,
        )
        return ClusterCommands(build)

    def read_shards(self, known: Sequence[str] = ()) -> Shards:
        """Which primary serves which slots now, asking the nodes in `known` first."""
        addresses = [host_port(address) for address in known]
        addresses += [address for address in self._cluster_nodes if address not in addresses]
        password = parse_url(self.url).get("password")
        return read_shards(
            addresses,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._socket_timeout,
            **({"password": password} if password else {}),
        )

    def node_connection_factory(self, address: str, **options) -> Callable[[], redis.Connection]:
        """New unconnected connections to one node of the cluster, "host:port"."""
        host, port = host_port(address)
        password = parse_url(self.url).get("password")
        return functools.partial(
            redis.Connection,
            host=host,
            port=port,
            **({"password": password} if password else {}),
            **options,
        )

    def pool(self, *, blocking: bool = False, **options) -> redis.ConnectionPool:
        """A connection pool to the server, or to the primary Sentinel names now.

        `blocking`: at most `max_connections`, callers wait `timeout` for one to free up."""
        if self._sentinel is None:
            # Only where one is chosen: an explicit class would override rediss://'s TLS one.
            chosen = connection_class_for(self.url)
            if chosen is not None:
                options = {"connection_class": chosen, **options}
            kind = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
            return kind.from_url(self.url, **options)
        url_options = {
            key: value
            for key, value in parse_url(self.url).items()
            if key in ("db", "username", "password")
        }
        if blocking:
            return BlockingSentinelPool(self.master, self._sentinel, **url_options, **options)
        return SentinelConnectionPool(
            self.master,
            self._sentinel,
            connection_class=SentinelCheckedWithoutYielding,
            **url_options,
            **options,
        )

    def connection_factory(self, **options) -> Callable[[], redis.Connection]:
        """New unconnected connections, each to the primary of its connect time; on a
        cluster, to each node named in turn (any node carries classic pub/sub)."""
        if self.cluster:
            factories = itertools.cycle(
                [
                    self.node_connection_factory(f"{h}:{p}", **options)
                    for h, p in self._cluster_nodes
                ]
            )
            return lambda: next(factories)()
        pool = self.pool(**options)
        return functools.partial(pool.connection_class, **pool.connection_kwargs)
