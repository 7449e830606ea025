"""Order statistics: computed from the database, cached in Redis for every worker.

On a cache miss (or a trigger newer than the cache) one worker of the deployment recomputes
under a Redis lock while the others wait for its result, so a trigger costs one computation
however many workers and admin screens there are. Without Redis every caller computes from
the database directly (`mode: "db-poll"`).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import func, select

from app import metrics
from app.extensions import db
from app.orders.models import ORDER_STATUS_FOR, Order, isoformat_utc

from .series import per_minute

log = logging.getLogger(__name__)

CACHE_KEY = "admin:stats:cache"
LOCK_KEY = "admin:stats:lock"
TRIGGER_CHANNEL = "admin:stats:updated"
# When the orders last changed, as announced: statistics cached before it are stale, even
# for a reader that no trigger woke (a dashboard opening after a sale).
CHANGED_KEY = "admin:stats:changed"
WEBHOOKS_KEY = "admin:stats:webhooks"
COMPUTATIONS_KEY = "admin:stats:computations"
LOCK_MS = 10_000  # longer than any computation; a crashed holder frees it by expiry
WAIT_FOR_OTHER_S = 5.0


def compute_from_database(now: datetime) -> dict:
    """The database part of the statistics: two grouped queries (orders by status, settled
    orders by status and minute) and three aggregates."""
    by_status = dict.fromkeys(sorted(set(ORDER_STATUS_FOR.values())), 0)
    for status, count in db.session.execute(
        select(Order.status, func.count()).group_by(Order.status)
    ):
        by_status[status] = count
    paid = Order.status == "paid"
    revenue = db.session.scalar(select(func.coalesce(func.sum(Order.total_amount), 0)).where(paid))
    last_hour = db.session.scalar(
        select(func.count()).where(paid, Order.paid_at >= now - timedelta(hours=1))
    )
    mean_seconds = db.session.scalar(select(func.avg(_seconds_to_pay())).where(paid))
    series = per_minute(now)
    db.session.close()
    return {
        "orders": {"byStatus": by_status, "total": sum(by_status.values())},
        "revenuePaid": float(revenue),
        "paymentsLastHour": last_hour,
        "meanSecondsToPay": None if mean_seconds is None else round(float(mean_seconds), 3),
        "perMinute": series,
    }


def _seconds_to_pay():
    if db.engine.dialect.name == "postgresql":
        return func.extract("epoch", Order.paid_at - Order.created_at)
    return (func.julianday(Order.paid_at) - func.julianday(Order.created_at)) * 86400


class StatsSource:
    """Statistics for the routes and streams of one app; `mode` is set by the caller."""

    def __init__(self, app, redis_client, presence):
        self._app = app
        self._redis = redis_client
        self._presence = presence
        self.computations = 0  # in this worker

    def get(self, fresher_than: float | None = None) -> dict:
        """Cached statistics, recomputed by one worker when missing or older than
        `fresher_than` (epoch seconds; by default the last announced change)."""
        try:
            raw, changed = self._redis.mget(CACHE_KEY, CHANGED_KEY)
            cached = None if raw is None else json.loads(raw)
            if fresher_than is None and changed is not None:
                fresher_than = float(changed)
            if cached is not None and (fresher_than is None or cached["at"] >= fresher_than):
                return cached["stats"]
            if self._redis.set(LOCK_KEY, "1", nx=True, px=LOCK_MS):
                try:
                    return self._compute_and_cache()[1]
                finally:
                    self._redis.delete(LOCK_KEY)
            return self._await_other(fresher_than) or self._compute_and_cache()[1]
        except RedisError as exc:
            log.debug("stats cache unavailable, computing directly: %s", exc)
            return self.compute()

    def refresh(self) -> dict:
        """Recompute, cache and announce: the background refresher and the refresh route."""
        at, stats = self._compute_and_cache()
        try:
            # The cache's own time: streams woken by this find the cache fresh enough.
            self._redis.publish(TRIGGER_CHANNEL, repr(at))
        except RedisError as exc:
            log.warning("stats trigger not published: %s", exc)
        return stats

    def compute(self) -> dict:
        """Compute now from the database, the counters and the workers' presence."""
        now = datetime.now(UTC)
        with self._app.app_context():
            stats = compute_from_database(now)
        self.computations += 1
        metrics.stats_computations.inc()
        try:
            webhooks = self._redis.hgetall(WEBHOOKS_KEY)
            computations = self._redis.incr(COMPUTATIONS_KEY)
        except RedisError:
            webhooks, computations = {}, None
        live = self._presence.totals()
        return {
            **stats,
            "webhooks": {
                name: int(webhooks.get(name, 0)) for name in ("received", "duplicated", "rejected")
            },
            "live": {
                "waiters": live.get("waiters", 0),
                "streams": live.get("streams", 0),
                "workers": live.get("workers", 0),
            },
            "computations": computations,
            "generatedAt": isoformat_utc(now),
        }

    def _compute_and_cache(self) -> tuple[float, dict]:
        """Compute and cache; returns the time the computation started, and the stats."""
        at = time.time()
        stats = self.compute()
        ttl = self._app.config["STATS_CACHE_TTL"]
        try:
            self._redis.set(CACHE_KEY, json.dumps({"at": at, "stats": stats}), ex=ttl)
        except RedisError as exc:
            log.debug("stats not cached: %s", exc)
        return at, stats

    def _cached(self) -> dict | None:
        raw = self._redis.get(CACHE_KEY)
        return None if raw is None else json.loads(raw)

    def _await_other(self, fresher_than: float | None) -> dict | None:
        """Another worker holds the lock: wait for its result instead of computing too."""
        deadline = time.monotonic() + WAIT_FOR_OTHER_S
        while time.monotonic() < deadline:
            time.sleep(0.025)
            cached = self._cached()
            if cached is not None and (fresher_than is None or cached["at"] >= fresher_than):
                return cached["stats"]
            if not self._redis.exists(LOCK_KEY):
                return None  # it gave up or crashed: compute ourselves
        return None
