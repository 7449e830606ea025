"""Where this process's Redis is: one server at REDIS_URL, or the primary that Redis Sentinel
names (REDIS_SENTINELS, REDIS_SENTINEL_MASTER).

Every Redis connection of the process is made here: the command pool (commands, publishes,
the limiter, leases) and the hub's pub/sub connections. Under Sentinel each connection asks
the sentinels for the primary when it connects, so after a failover the next connection
goes to the new primary: the hub reconnects, re-subscribes and re-reads as after any loss
of Redis, and the pool drops its idle connections to the old one (redis-py's
SentinelConnectionPool). REDIS_URL then gives only the database number and the password.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from app.config.sentinel import host_port
from app.logs import redact_url

from .redis_adapter import (
    BlockingSentinelPool,
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
        connect_timeout: float = 0.5,
        socket_timeout: float = 5.0,
    ):
        self.url = url
        self.master = master
        self._sentinel = None
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
            connect_timeout=cfg["REDIS_CONNECT_TIMEOUT"],
            socket_timeout=cfg["REDIS_SOCKET_TIMEOUT"],
        )

    @property
    def sentinel(self) -> bool:
        return self._sentinel is not None

    def describe(self) -> str:
        """For logs: no password."""
        if self._sentinel is None:
            return redact_url(self.url)
        return f"the primary of {self.master!r} (Sentinel at {self._sentinels})"

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
        """New unconnected connections, each to the primary of its connect time."""
        pool = self.pool(**options)
        return functools.partial(pool.connection_class, **pool.connection_kwargs)
