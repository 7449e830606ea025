"""Jobs that run once across the deployment: whoever holds a job's Redis lease runs it.

Every worker runs a small loop per job that takes or renews the lease `service:leader:<name>`
(SET NX with a TTL; renewed only by its holder). If the holder dies, the lease expires and
another worker takes over within one TTL. Without Redis nobody holds a lease and the job
pauses: its work (refreshing the cache, expiring orders) can wait for Redis.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import gevent
import redis
from redis.exceptions import RedisError

from .connections import WORKER_ID

log = logging.getLogger(__name__)

# Extend the lease only if we still hold it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LeaderJob:
    def __init__(
        self,
        client: redis.Redis,
        name: str,
        job: Callable[[], None],
        *,
        interval: float,
        lease_ttl: float,
    ):
        self._client = client
        self.name = name
        self._job = job
        self.interval = interval
        self.lease_ttl = lease_ttl
        self._key = f"service:leader:{name}"
        self._holder = f"{WORKER_ID}:{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW)
        self._greenlet: gevent.Greenlet | None = None
        self.leader = False

    def start(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        if self.leader:
            try:
                self._client.delete(self._key)
            except RedisError:
                pass
            self.leader = False

    def _loop(self) -> None:
        next_run = time.monotonic()
        while True:
            self.leader = self._hold_lease()
            if self.leader and time.monotonic() >= next_run:
                try:
                    self._job()
                except Exception:
                    log.exception("background job %s failed", self.name)
                next_run = time.monotonic() + self.interval
            gevent.sleep(min(self.interval, self.lease_ttl / 3))

    def _hold_lease(self) -> bool:
        ttl_ms = int(self.lease_ttl * 1000)
        try:
            if self._client.set(self._key, self._holder, nx=True, px=ttl_ms):
                return True
            return bool(self._renew(keys=[self._key], args=[self._holder, ttl_ms]))
        except RedisError:
            return False
