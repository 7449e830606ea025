"""Who is connected: this worker's registry, totals across workers, per-token stream limits.

Each worker writes its counts to one Redis hash every few seconds (presence), so any worker
can report totals for the whole deployment; an entry not refreshed for three intervals is a
worker that is gone. The per-token limit is a sorted set of stream leases: a stream gives
its lease back when it ends, at once when its client leaves (`sse.Departure`); the lease's
expiry, pushed back by the stream's heartbeat, only covers a worker that died.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field

import gevent
import redis
from redis.exceptions import RedisError

from app import metrics

log = logging.getLogger(__name__)

PRESENCE_KEY = "realtime:presence"
RELEASE_RETRY_S = 1.0  # a lease that could not be given back is tried again this often
_HOST = socket.gethostname()
WORKER_ID = f"{_HOST}:{os.getpid()}"


# One per held wait, by the thousand: slots, and the registry keys it by identity.
@dataclass(slots=True, eq=False)
class Connection:
    kind: str  # "wait", "sse:stats", "sse:services", "sse:order"
    key: str  # what it watches: an order id, a stream name
    since: float = field(default_factory=time.time)
    last_status: str | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "since": round(self.since, 3),
            "lastStatus": self.last_status,
        }


class Registry:
    """This worker's open streams and held waits."""

    def __init__(self):
        self._open: dict[Connection, None] = {}  # in the order they opened

    def open(self, kind: str, key: str) -> Connection:
        connection = Connection(kind, key)
        self._open[connection] = None
        _gauge(kind).inc()
        return connection

    def close(self, connection: Connection) -> None:
        if connection in self._open:
            del self._open[connection]
            _gauge(connection.kind).dec()

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for connection in self._open:
            counts[connection.kind] = counts.get(connection.kind, 0) + 1
        return counts

    def listing(self, limit: int) -> list[dict]:
        return [c.to_json() for c in itertools.islice(self._open, limit)]

    def __len__(self) -> int:
        return len(self._open)


registry = Registry()


def _gauge(kind: str):
    return metrics.waits_held if kind == "wait" else metrics.streams_open.labels(kind)


class Presence:
    """Publishes this worker's counts to Redis every `interval` seconds; sums everyone's."""

    def __init__(self, client: redis.Redis, counts, interval: float):
        self._client = client
        self._counts = counts  # () -> dict of this worker's counts
        self.interval = interval
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        while True:
            self.publish()
            gevent.sleep(self.interval)

    def publish(self) -> None:
        entry = json.dumps({**self._counts(), "at": time.time()})
        try:
            self._client.hset(PRESENCE_KEY, WORKER_ID, entry)
        except RedisError as exc:
            log.debug("presence not published: %s", exc)

    def totals(self) -> dict:
        """Counts summed over the workers seen recently; this worker's own when Redis fails."""
        try:
            entries = self._client.hgetall(PRESENCE_KEY)
        except RedisError:
            return {**self._counts(), "workers": 1}
        fresh_after = time.time() - 3 * self.interval
        totals: dict = {"workers": 0}
        gone = []
        for worker, raw in entries.items():
            entry = json.loads(raw)
            if entry.pop("at") < fresh_after:
                gone.append(worker)
                continue
            totals["workers"] += 1
            for name, value in entry.items():
                totals[name] = totals.get(name, 0) + value
        if gone:
            try:
                self._client.hdel(PRESENCE_KEY, *gone)
            except RedisError:
                pass
        return totals


def _worker_is_gone(lease_id: bytes | str) -> bool:
    """Whether a lease id ("<host>:<pid>:<unique>") names a worker of this host that is no
    longer running."""
    if isinstance(lease_id, bytes):
        lease_id = lease_id.decode(errors="replace")
    host, _, rest = lease_id.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # running, as another user
    return False


class LeaseLimiter:
    """At most `limit` things held at once per owner (a token, a client address, an order),
    across all workers: a lease per thing in a Redis sorted set, expiring by itself if its
    holder dies. A limit of 0 means no limit. While Redis is down each worker counts alone.
    """

    def __init__(self, client: redis.Redis, limit: int, lease: float, prefix: str):
        self._client = client
        self.limit = limit
        self.lease = lease
        self._prefix = prefix
        self._local: dict[str, int] = {}  # per-worker fallback while Redis is down

    def _key(self, owner: str) -> str:
        # Hashed: owners may be secrets (admin tokens).
        return self._prefix + hashlib.sha256(owner.encode()).hexdigest()[:24]

    def acquire(self, token: str, stream_id: str) -> str | None:
        """A lease id for one more thing of `token`, or None when it holds `limit` already."""
        if not self.limit:
            return "unlimited:" + stream_id
        key, now = self._key(token), time.time()
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now)  # leases of streams that died unclosed
            pipe.zadd(key, {stream_id: now + self.lease})
            pipe.zcard(key)
            pipe.expire(key, int(self.lease) + 1)
            open_streams = pipe.execute()[2]
        except RedisError:
            return self._acquire_locally(token, stream_id)
        if open_streams > self.limit and not self._dropped_leases_of_dead_workers(key, now):
            self.release(token, stream_id)
            return None
        return stream_id

    def _dropped_leases_of_dead_workers(self, key: str, now: float) -> bool:
        """Drop the leases of workers of this host that are gone (killed, say: they gave
        nothing back); True if that leaves room for the lease just added. A client that
        reconnects after its worker died would otherwise meet its own old stream's lease
        until it lapsed. Leases of other hosts are left to lapse."""
        try:
            members = self._client.zrangebyscore(key, now, "+inf")
            dead = [m for m in members if _worker_is_gone(m)]
            if not dead:
                return False
            pipe = self._client.pipeline(transaction=True)
            pipe.zrem(key, *dead)
            pipe.zcard(key)
            return pipe.execute()[1] <= self.limit
        except RedisError:
            return False

    def refresh(self, token: str, stream_id: str) -> None:
        if stream_id.startswith(("local:", "unlimited:")):
            return
        key = self._key(token)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.zadd(key, {stream_id: time.time() + self.lease}, xx=True)
            pipe.expire(key, int(self.lease) + 1)  # the set outlives its longest lease
            pipe.execute()
        except RedisError:
            pass

    def release(self, token: str, stream_id: str) -> None:
        if stream_id.startswith("unlimited:"):
            return
        if stream_id.startswith("local:"):
            self._local[token] -= 1
            return
        key = self._key(token)
        try:
            self._client.zrem(key, stream_id)
        except RedisError:
            # Else it would hold its owner's slot until it lapses, a whole lease.
            gevent.spawn(self._release_later, key, stream_id, time.time() + self.lease)

    def _release_later(self, key: str, stream_id: str, lapses_at: float) -> None:
        while time.time() < lapses_at:
            gevent.sleep(RELEASE_RETRY_S)
            try:
                self._client.zrem(key, stream_id)
                return
            except RedisError:
                continue

    def _acquire_locally(self, token: str, stream_id: str) -> str | None:
        if self._local.get(token, 0) >= self.limit:
            return None
        self._local[token] = self._local.get(token, 0) + 1
        return "local:" + stream_id
