"""Publishing after commit: one greenlet per process sends every event, batching them.

Events that arrive together go out in ONE pipeline round trip, in arrival order. Under a burst
of webhooks this keeps publishing to one Redis connection at a time and is fair: callers are
served first come, first served, where a small connection pool shared by many greenlets lets a
newcomer take a freed connection ahead of one that has waited, and starves some of them.
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

import gevent
import redis
from gevent.event import AsyncResult
from gevent.queue import SimpleQueue
from redis.exceptions import RedisError

from app import metrics
from app.logs import fields, redis_error

log = logging.getLogger(__name__)

# Enough to drain a burst in a few round trips, small enough to keep each pipeline short.
MAX_BATCH = 200


class Publish(NamedTuple):
    """PUBLISH channel message, or SPUBLISH for a sharded channel."""

    channel: str
    message: str
    sharded: bool = False

    def describe(self) -> str:
        return f"PUBLISH {self.channel}"

    def queue_on(self, pipe) -> None:
        if self.sharded:
            pipe.spublish(self.channel, self.message)
        else:
            # Not pipe.publish, which redis-py refuses in a cluster's pipeline: a classic
            # publish is served by any node, which passes it on to the others.
            pipe.execute_command("PUBLISH", self.channel, self.message)


class Latest(NamedTuple):
    """The cached latest state of a subject: SETEX key ttl value (as SET key value EX ttl).

    `if_absent` (SET NX) for a first state, which must never replace a later one written by
    another process in the meantime.
    """

    key: str
    ttl: int
    value: str
    if_absent: bool = False

    def describe(self) -> str:
        return f"SET {self.key}"

    def queue_on(self, pipe) -> None:
        pipe.set(self.key, self.value, ex=self.ttl, nx=self.if_absent)


class Append(NamedTuple):
    """A replay buffer: RPUSH the value, EXPIRE ttl, LTRIM to the newest `max_len`."""

    key: str
    value: str
    ttl: int
    max_len: int

    def describe(self) -> str:
        return f"RPUSH {self.key}"

    def queue_on(self, pipe) -> None:
        pipe.rpush(self.key, self.value)
        pipe.expire(self.key, self.ttl)
        pipe.ltrim(self.key, -self.max_len, -1)


class Increment(NamedTuple):
    """HINCRBY key field 1: a counter kept in Redis for every worker to read."""

    key: str
    field: str

    def describe(self) -> str:
        return f"HINCRBY {self.key} {self.field}"

    def queue_on(self, pipe) -> None:
        pipe.hincrby(self.key, self.field, 1)


# Each operation's describe() is what a log line shows of it: the command and its channel or
# key, never the value, which for an order is its JSON with the customer's name and email.
Operation = Publish | Latest | Append | Increment


class Publisher:
    def __init__(
        self,
        client: redis.Redis,
        *,
        wait_timeout: float = 2.0,
        on_failure: Callable[[], None] | None = None,
    ):
        self._client = client
        self._wait_timeout = wait_timeout
        self._on_failure = on_failure
        self._queue: SimpleQueue = SimpleQueue()
        self._greenlet: gevent.Greenlet | None = None
        self._stopped = False

    def send(self, *operations: Operation) -> bool:
        """Send one event's operations, in order, with others; block until the batch was sent.

        Returns False when Redis failed (or did not answer in time). Callers have already
        committed, so the database stays the truth and waiters catch up through the hub's
        database poll.
        """
        if self._stopped:
            return False
        self._ensure_running()
        done = AsyncResult()
        self._queue.put((operations, done))
        try:
            return done.get(timeout=self._wait_timeout)
        except gevent.Timeout:
            log.warning(
                "Redis did not confirm %s within %.1fs",
                operations[0].describe(),
                self._wait_timeout,
                extra=fields(event="publish.unconfirmed"),
            )
            return False

    def submit(self, *operations: Operation) -> None:
        """Queue operations and return at once: for what no caller needs confirmed."""
        if self._stopped:
            return
        self._ensure_running()
        done = AsyncResult()
        self._queue.put((operations, done))

    def stop(self) -> None:
        """Stop for good: what is queued is dropped, what comes later is refused."""
        self._stopped = True
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _ensure_running(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get())
            ok = self._send(batch)
            for _, done in batch:
                done.set(ok)
            if not ok and self._on_failure is not None:
                self._on_failure()

    def _send(self, batch) -> bool:
        pipe = self._client.pipeline(transaction=False)
        for operations, _ in batch:
            for operation in operations:
                operation.queue_on(pipe)
        try:
            pipe.execute()
        except RedisError as exc:
            metrics.publish_failures.inc()
            first_event, _ = batch[0]
            log.warning(
                "publish of %d event(s) failed, waiters will read the database: %s",
                len(batch),
                redis_error(exc),
                extra=fields(event="publish.failed", first=first_event[0].describe()),
            )
            return False
        return True
