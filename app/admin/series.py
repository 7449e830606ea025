"""Settled orders per minute: paid, cancelled and failed, for the last hour.

One grouped query: the database counts the orders of each status and minute, on PostgreSQL
and SQLite alike; the minutes without any are zeros here. A minute is a UTC clock minute;
the last bucket is the current minute, still filling.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.extensions import db
from app.orders.models import Order, isoformat_utc

MINUTES = 60
SERIES_STATUSES = ("paid", "cancelled", "failed")


def settled_at():
    """When an order was settled: its paid_at when paid, else its last update (a settled
    order is never updated again)."""
    return func.coalesce(Order.paid_at, Order.updated_at)


def _minute_of(column):
    """The column's UTC minute, as the database gives it back."""
    if db.engine.dialect.name == "postgresql":
        return func.date_trunc("minute", func.timezone("UTC", column))
    return func.strftime("%Y-%m-%d %H:%M", column)  # SQLite keeps UTC text


def _as_minute(value) -> datetime:
    if isinstance(value, str):
        value = datetime.strptime(value, "%Y-%m-%d %H:%M")
    return value.replace(tzinfo=UTC, second=0, microsecond=0)


def per_minute(now: datetime) -> dict:
    """{"start", "bucketSeconds", "paid": [60 counts], "cancelled": [...], "failed": [...]}:
    bucket i counts the orders settled in the minute that starts `start` + i minutes."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
    series = {status: [0] * MINUTES for status in SERIES_STATUSES}
    at = settled_at()
    minute = _minute_of(at)
    rows = db.session.execute(
        select(Order.status, minute, func.count())
        .where(Order.status.in_(SERIES_STATUSES), at >= start)
        .group_by(Order.status, minute)
    )
    for status, value, count in rows:
        index = int((_as_minute(value) - start).total_seconds() // 60)
        if 0 <= index < MINUTES:
            series[status][index] += count
    return {"start": isoformat_utc(start), "bucketSeconds": 60, **series}
