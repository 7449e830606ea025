"""The canary: a message the hub publishes to itself to notice a silently dead subscription.

It goes through the command connection that application publishes use. A missing echo
means the subscription went silent (a frozen server, a proxy that stopped forwarding): the
reader then drops the connection and reconnects. Each pub/sub connection has a canary of its
own; one on a cluster node's sharded connection is SPUBLISHed on a channel of that node's
slots.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

import gevent
import redis
from redis.exceptions import RedisError

from ..redis_adapter import pool_exhausted

log = logging.getLogger(__package__)


class Canary:
    """Its state lives between the reader, which asks when to wake and hears the echo, and
    the greenlet of each publish."""

    def __init__(
        self,
        publish: Callable[[str, str], int],
        *,
        interval: float,
        timeout: float,
        counts_receivers: bool = True,
    ):
        self._publish_on = publish  # (channel, message) -> receivers
        # Whether the publish's answer counts our subscription: not for a classic publish
        # on a cluster, which counts only the receiving node's subscribers (ours may be on
        # another); the echo alone tells there.
        self._counts_receivers = counts_receivers
        self.interval = interval
        self.timeout = timeout
        # Unique to this canary; its connection may place it in a slot (channel).
        self.base = f"hub:canary:{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.channel = self.base
        self._token = 0
        self._sent_at: float | None = None  # set while an echo is awaited
        self._echoed = 0  # the last token that came back
        self._failure: str | None = None
        self._next = 0.0  # when the next canary goes out, if none is awaited

    def reset(self) -> None:
        """A new connection: a canary of the old connection can fail nothing here."""
        self._token += 1
        self._sent_at = None
        self._failure = None

    def start(self, now: float) -> None:
        """The reader starts on a connection: the first canary goes out within a second."""
        self._next = now + min(self.interval, 1.0)

    def wake_in(self, now: float, last_frame: float) -> float:
        """How long the reader may wait for a frame; sends the canary when one is due.

        Raises ConnectionError when the last publish failed. While an echo is awaited, the
        deadline runs from the last frame too: under load the echo may sit behind thousands
        of frames (subscribe confirmations), which is no sign of a lost subscription; nor is
        a late echo while frames keep coming.
        """
        if self._failure:
            raise redis.ConnectionError(self._failure)
        if self._sent_at is None:
            if now >= self._next:
                self._send(now)
                self._next = now + self.interval
            return max(self._next - now, 0.0)
        return max(max(self._sent_at, last_frame) + self.timeout - now, 0.0)

    def check_echo(self, last_frame: float) -> None:
        """After a wait that saw no frame: silence past the deadline is a lost subscription."""
        if (sent_at := self._sent_at) is not None and (
            time.monotonic() >= max(sent_at, last_frame) + self.timeout
        ):
            raise redis.ConnectionError(f"canary not echoed within {self.timeout:.1f}s")

    def echoed(self, data: str) -> None:
        if data == str(self._token):
            self._echoed = self._token
            self._sent_at = None

    def _send(self, now: float) -> None:
        self._token += 1
        self._sent_at = now
        gevent.spawn(self._publish, self._token)

    def _publish(self, token: int) -> None:
        """Publish in a greenlet of its own: a frozen server must not block the reader.

        The echo is awaited from the moment Redis took the publish: under load the publish
        may queue for a command connection, which says nothing about the subscription. For
        the same reason a pool with no free connection skips this round instead of failing.
        """
        try:
            receivers = self._publish_on(self.channel, str(token))
        except RedisError as exc:
            if token == self._token and pool_exhausted(exc):
                log.debug("canary skipped: every command connection is busy")
                self._sent_at = None
                return
            failure = f"canary publish failed: {exc}"
        else:
            reached = receivers or not self._counts_receivers
            failure = None if reached else "canary reached no subscriber"
        if token != self._token:
            return
        if failure:
            self._failure = failure
        elif self._echoed != token:
            self._sent_at = time.monotonic()
