"""The statistics' per-minute series of settled orders (paid, cancelled, failed), on the real
database: orders are settled through the webhook, then their settlement moved to known times,
so every bucket is checked exactly."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.admin.schemas import Stats
from app.extensions import db
from app.orders.models import Order
from tests.support import servers
from tests.support.helpers import create_order, pay

ADMIN = {"Authorization": "Bearer admin"}
RESULT_CODES = {"paid": 0, "cancelled": 1032, "failed": 2001}


@pytest.fixture
def admin_app(make_app, app):  # (app: an empty orders table)
    return make_app(ADMIN_TOKENS=["admin"])


def settle_at(app, client, status: str, at: datetime) -> None:
    order = create_order(client)
    assert pay(client, order, result_code=RESULT_CODES[status]).status_code == 200
    with app.app_context():
        moved = {"updated_at": at, "paid_at": at if status == "paid" else None}
        db.session.execute(update(Order).where(Order.id == order["orderId"]).values(**moved))
        db.session.commit()
        assert db.session.get(Order, order["orderId"]).status == status
        db.session.remove()


def stats(client, path="/api/admin/stats", method="get") -> dict:
    response = getattr(client, method)(path, headers=ADMIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    Stats.model_validate(body)  # the documented shape
    return body


def test_settled_orders_are_counted_in_their_minute(admin_app):
    client = admin_app.test_client()
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    settled = [
        ("paid", minute + timedelta(seconds=1)),  # the current minute
        ("paid", minute + timedelta(seconds=2)),
        ("cancelled", minute - timedelta(minutes=1, seconds=-30)),
        ("failed", minute - timedelta(minutes=5) + timedelta(seconds=59)),
        ("paid", minute - timedelta(minutes=59)),  # the first minute of the hour
        ("failed", minute - timedelta(minutes=59, seconds=1)),  # before it: not counted
        ("cancelled", minute - timedelta(hours=3)),
    ]
    for status, at in settled:
        settle_at(admin_app, client, status, at)
    create_order(client)  # pending: never in the series

    series = stats(client)["perMinute"]
    start = datetime.fromisoformat(series["start"])
    assert series["bucketSeconds"] == 60
    assert start.second == 0 and start.microsecond == 0
    expected = {status: [0] * 60 for status in ("paid", "cancelled", "failed")}
    for status, at in settled:
        index = int((at - start).total_seconds() // 60)
        if 0 <= index < 60:
            expected[status][index] += 1
    assert {k: series[k] for k in expected} == expected
    # Built from `start` (the minute may have turned meanwhile), yet this exact:
    if start == minute - timedelta(minutes=59):
        assert series["paid"][59] == 2 and series["paid"][0] == 1
        assert series["cancelled"][58] == 1 and series["failed"][54] == 1
        assert sum(series["failed"]) == 1


def test_a_read_after_a_settlement_sees_it_and_a_refresh_agrees(admin_app):
    """Statistics cached before a change are stale for any later read: a dashboard opened
    after a sale shows it."""
    client = admin_app.test_client()
    empty = stats(client)["perMinute"]  # now cached
    assert empty["paid"] == empty["cancelled"] == empty["failed"] == [0] * 60

    settle_at(admin_app, client, "failed", datetime.now(UTC))
    servers.eventually(
        lambda: sum(stats(client)["perMinute"]["failed"]) == 1, 5, "the settlement counted"
    )
    refreshed = stats(client, "/api/admin/stats/refresh", "post")["perMinute"]
    assert refreshed["failed"][-1] + refreshed["failed"][-2] == 1
    assert stats(client)["perMinute"] == refreshed


def test_series_on_sqlite_and_postgresql(any_database_app):
    any_database_app.config["ADMIN_TOKENS"] = ["admin"]
    client = any_database_app.test_client()
    now = datetime.now(UTC)
    settle_at(any_database_app, client, "paid", now - timedelta(minutes=10))
    settle_at(any_database_app, client, "failed", now - timedelta(minutes=10))
    any_database_app.extensions["redis"].delete("admin:stats:cache")
    series = stats(client, "/api/admin/stats/refresh", "post")["perMinute"]
    start = datetime.fromisoformat(series["start"])
    index = int((now - timedelta(minutes=10) - start).total_seconds() // 60)
    assert series["paid"][index] == 1 and sum(series["paid"]) == 1
    assert series["failed"][index] == 1 and sum(series["failed"]) == 1
