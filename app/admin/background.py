"""The app's background services and their status: each runs once across the deployment
and reports on `service:<name>`, with the last report of each kept in `service:status`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import redis
from redis.exceptions import RedisError

from app.orders import services as orders
from app.orders.models import isoformat_utc
from app.realtime.connections import WORKER_ID
from app.realtime.leader import LeaderJob

log = logging.getLogger(__name__)

STATUS_KEY = "service:status"
CHANNEL_PREFIX = "service:"


def report(client: redis.Redis, service: str, status: str, detail: dict) -> dict:
    """Record and announce a service's status."""
    entry = {
        "service": service,
        "status": status,
        "detail": detail,
        "at": isoformat_utc(datetime.now(UTC)),
        "worker": WORKER_ID,
    }
    message = json.dumps(entry, separators=(",", ":"))
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(STATUS_KEY, service, message)
        pipe.execute_command("PUBLISH", CHANNEL_PREFIX + service, message)  # see Publish
        pipe.execute()
    except RedisError as exc:
        log.warning("status of %s not reported: %s", service, exc)
    return entry


def all_statuses(client: redis.Redis) -> list[dict]:
    try:
        entries = client.hgetall(STATUS_KEY)
    except RedisError:
        return []
    return [json.loads(entries[name]) for name in sorted(entries)]


def build_services(app, source) -> list[LeaderJob]:
    """The stats refresher and the reconciler of stuck orders."""
    client = app.extensions["redis"]
    cfg = app.config

    def refresh_stats() -> None:
        stats = source.refresh()
        report(client, "stats-refresher", "ok", {"generatedAt": stats["generatedAt"]})

    def reconcile() -> None:
        with app.app_context():
            expired = orders.expire_stale(cfg["ORDER_EXPIRY_SECONDS"])
        report(
            client,
            "reconciler",
            "ok",
            {"expired": expired, "olderThanSeconds": cfg["ORDER_EXPIRY_SECONDS"]},
        )

    lease = cfg["SERVICE_LEASE_TTL"]
    return [
        # Before the cache expires, so readers rarely find it missing.
        LeaderJob(
            client,
            "stats-refresher",
            refresh_stats,
            interval=cfg["STATS_CACHE_TTL"] / 2,
            lease_ttl=lease,
        ),
        LeaderJob(
            client, "reconciler", reconcile, interval=cfg["RECONCILE_INTERVAL"], lease_ttl=lease
        ),
    ]
