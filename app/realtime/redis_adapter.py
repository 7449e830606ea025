"""Every use of redis-py beyond its documented API, in one place.

Verified on every redis-py release from 8.0.0 to 8.2.0 (8.0.0, 8.0.1, 8.1.0, 8.2.0) with
hiredis 3.5.0 (VERIFIED_REDIS_PY below); the project pins 8.1.0.
tests/unit/test_redis_adapter.py fails when an internal used here changes.

What is used, and why:
- `conn._sock` and hiredis's Reader at `conn._parser._reader` (`has_data()`): to wait for a
  frame on an io watcher of our own, and to check for leftover data without yielding.
- the text of BlockingConnectionPool's "no connection free" error, which has no type of its own.
- RESP2 (`protocol=2`) for the pub/sub connection, read with the connection's raw
  `send_command` / `read_response`: pub/sub frames come back as plain arrays.
- redis.sentinel's SentinelConnectionPool combined with BlockingConnectionPool by multiple
  inheritance (BlockingSentinelPool): redis-py has no bounded pool for Sentinel, and the two
  only meet in ConnectionPool's constructor and `reset`, which both pass on with super().

Why the reader waits on its own watcher: redis-py's `can_read(timeout)` polls the socket
through gevent's `select.poll`, which wakes the caller by setting an Event: the reader then
runs only on the loop's NEXT pass, after every greenlet that became ready meanwhile. Under a
burst of webhooks that pass holds all of them, so deliveries waited tens of milliseconds
behind the webhooks that caused them. Here the reader waits on an io watcher at the loop's
top priority, whose callback switches to it directly: on the pass that sees the socket
readable, the reader runs before any other greenlet woken by the same pass.
"""

from __future__ import annotations

import select
from urllib.parse import urlsplit

import gevent
import redis
from gevent import monkey
from gevent.hub import get_hub
from redis.exceptions import RedisError
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

# The redis-py releases this module was checked against: lowest and highest, inclusive.
VERIFIED_REDIS_PY = ((8, 0, 0), (8, 2, 0))

READ = 1  # libev's EV_READ
# What BlockingConnectionPool raises (as a ConnectionError) when no connection freed up in time.
_POOL_EXHAUSTED = "No connection available."


def pubsub_connection_options(*, connect_timeout: float, socket_timeout: float) -> dict:
    """The options of the hub's pub/sub connections, each read with read_response.

    Reads wait in FrameWaiter with their own timeout; socket_timeout bounds the connect
    handshake, writes and the rest of a frame, so a frozen server cannot hang the hub.
    """
    return dict(
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


def pool_exhausted(exc: RedisError) -> bool:
    """Whether `exc` says every connection of a BlockingConnectionPool stayed busy."""
    return str(exc) == _POOL_EXHAUSTED


class FrameWaiter:
    """Wakes the reader of one redis-py connection when a frame can be read."""

    def __init__(self, conn):
        self._conn = conn
        self._parser_reader = _parser_reader(conn)
        self._watcher = None
        self._sock = sock = getattr(conn, "_sock", None)
        # TLS keeps decrypted bytes above the socket, where no watcher sees them: can_read.
        tls = hasattr(sock, "pending")
        if self._parser_reader is not None and sock is not None and not tls:
            loop = get_hub().loop
            self._watcher = loop.io(sock.fileno(), READ)
            self._watcher.priority = loop.MAXPRI

    @property
    def prioritized(self) -> bool:
        """False when redis-py's internals were not as expected: `wait` is then can_read."""
        return self._watcher is not None

    def wait(self, timeout: float) -> bool:
        """True once a frame (or the connection's end) can be read, False after `timeout`."""
        if self._watcher is None:
            return self._conn.can_read(timeout=timeout)
        if self._parser_reader.has_data():
            return True  # read off the socket already, with an earlier frame
        if timeout <= 0:
            return _readable_now(self._sock)  # a look, not a trip through the loop
        with gevent.Timeout(timeout, False):
            get_hub().wait(self._watcher)
            return True
        return False

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None


def _parser_reader(conn):
    """hiredis's Reader inside redis-py's parser: it holds frames already received.

    Only the hiredis parser is used this way; with any other, None (plain can_read).
    """
    reader = getattr(getattr(conn, "_parser", None), "_reader", None)
    return reader if callable(getattr(reader, "has_data", None)) else None


class CheckedWithoutYielding(redis.Connection):
    """A command connection whose "anything left to read?" check does not yield.

    redis-py's pool asks each connection it hands out whether the socket holds data (a
    reply left unread would answer the next command). Under gevent that poll, even with a
    zero timeout, goes through the event loop: the caller resumes a pass later. The
    publisher takes a connection for every batch, so each webhook's answer waited a whole
    pass there. Here the common case, nothing on the socket and nothing in the parser, is
    a real zero-timeout poll(2); anything else goes to redis-py's own check.
    """

    def can_read(self, timeout: float = 0) -> bool:
        sock = self._sock
        if timeout == 0 and sock is not None:
            reader = _parser_reader(self)
            if reader is not None and not reader.has_data() and not _readable_now(sock):
                return False
        return super().can_read(timeout)


_blocking_poll = monkey.get_original("select", "poll")


def _readable_now(sock) -> bool:
    poller = _blocking_poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def connection_class_for(url: str) -> type[redis.Connection] | None:
    """CheckedWithoutYielding for plain TCP (redis://); None (redis-py's choice) otherwise."""
    return CheckedWithoutYielding if urlsplit(url).scheme == "redis" else None


class SentinelCheckedWithoutYielding(SentinelManagedConnection, CheckedWithoutYielding):
    """A connection to the primary Sentinel names, checked as CheckedWithoutYielding."""


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """At most `max_connections` connections to the primary Sentinel names; callers wait
    `timeout` for one to free up, as with the single server's BlockingConnectionPool."""

    def __init__(self, service_name, sentinel_manager, **options):
        options.setdefault("connection_class", SentinelCheckedWithoutYielding)
        super().__init__(service_name, sentinel_manager, **options)
