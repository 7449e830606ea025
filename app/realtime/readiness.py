"""Waiting for the next frame on the hub's pub/sub connection, first in line.

redis-py's `can_read(timeout)` polls the socket through gevent's `select.poll`, which wakes
the caller by setting an Event: the reader then runs only on the loop's NEXT pass, after
every greenlet that became ready meanwhile. Under a burst of webhooks that pass holds all of
them, so deliveries waited tens of milliseconds behind the webhooks that caused them.

Here the reader waits on an io watcher of its own at the loop's top priority, whose callback
switches to it directly: on the pass that sees the socket readable, the reader runs before
any other greenlet woken by the same pass.
"""

from __future__ import annotations

import gevent
from gevent.hub import get_hub

READ = 1  # libev's EV_READ


class FrameWaiter:
    """Wakes the reader of one redis-py connection when a frame can be read."""

    def __init__(self, conn):
        self._conn = conn
        self._parser_reader = _parser_reader(conn)
        self._watcher = None
        sock = getattr(conn, "_sock", None)
        if self._parser_reader is not None and sock is not None:
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
            return self._conn.can_read(timeout=0)
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
