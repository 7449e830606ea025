"""Publishing after commit: one greenlet per process sends every event, batching them.

Events that arrive together go out in ONE pipeline round trip, in arrival order. Under a burst
of webhooks this keeps publishing to one Redis connection at a time and is fair: callers are
served first come, first served, where a small connection pool shared by many greenlets lets a
newcomer take a freed connection ahead of one that has waited, and starves some of them.
"""

import logging
from typing import NamedTuple

import gevent
import redis
from gevent.event import AsyncResult
from gevent.queue import SimpleQueue
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Enough to drain a burst in a few round trips, small enough to keep each pipeline short.
MAX_BATCH = 200


class Latest(NamedTuple):
    """The cached latest state of a subject: SETEX key ttl value (as SET key value EX ttl)."""

    key: str
    ttl: int
    value: str


class Buffer(NamedTuple):
    """The replay buffer of a subject: RPUSH, EXPIRE ttl, LTRIM to the newest `max_len`."""

    key: str
    ttl: int
    max_len: int


class Event(NamedTuple):
    channel: str
    message: str
    latest: Latest
    buffer: Buffer

    def queue_on(self, pipe) -> None:
        pipe.publish(self.channel, self.message)
        pipe.set(self.latest.key, self.latest.value, ex=self.latest.ttl)  # SETEX
        pipe.rpush(self.buffer.key, self.message)
        pipe.expire(self.buffer.key, self.buffer.ttl)
        pipe.ltrim(self.buffer.key, -self.buffer.max_len, -1)


class Publisher:
    def __init__(self, client: redis.Redis, *, wait_timeout: float = 2.0):
        self._client = client
        self._wait_timeout = wait_timeout
        self._queue: SimpleQueue = SimpleQueue()
        self._greenlet: gevent.Greenlet | None = None

    def publish(self, event: Event) -> bool:
        """Publish, cache and buffer one event; block until its batch was sent.

        Returns False when Redis failed (or did not answer in time). Callers have already
        committed, so the database stays the truth and waiters catch up through the hub's
        database poll.
        """
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        done = AsyncResult()
        self._queue.put((event, done))
        try:
            return done.get(timeout=self._wait_timeout)
        except gevent.Timeout:
            log.warning(
                "publish on %s not confirmed within %.1fs", event.channel, self._wait_timeout
            )
            return False

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get())
            ok = self._send(batch)
            for _, done in batch:
                done.set(ok)

    def _send(self, batch) -> bool:
        pipe = self._client.pipeline(transaction=False)
        for event, _ in batch:
            event.queue_on(pipe)
        try:
            pipe.execute()
        except RedisError as exc:
            log.warning(
                "publish of %d event(s) failed, waiters will read the database: %s", len(batch), exc
            )
            return False
        return True
