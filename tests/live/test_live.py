"""Real gunicorn servers (gevent workers, the repo's gunicorn.conf.py) on loopback."""

import sqlite3
import tempfile
import time
from pathlib import Path

import gevent
import psycopg2
import redis
import requests

from app.payments.signature import sign
from tests.support import servers
from tests.support.helpers import WEBHOOK_SECRET, callback_body, order_body
from tests.support.live import create, parked, pay, wait


def test_wait_on_one_instance_is_answered_by_webhook_on_another(live_server, redis_client):
    first, second = live_server(), live_server()
    orders = [create(first) for _ in range(5)]
    waits = [gevent.spawn(wait, first, order) for order in orders]
    servers.wait_until(
        lambda: parked(first) == len(orders), 10, message="waits held on the first instance"
    )

    sent = time.monotonic()
    for order in orders:
        assert pay(second, order).status_code == 200
    answers = [w.get(timeout=15) for w in waits]
    elapsed = time.monotonic() - sent

    for order, answer in zip(orders, answers, strict=True):
        body = answer.json()
        assert answer.status_code == 200
        assert body["orderId"] == order["orderId"]
        assert body["changed"] is True and body["paymentStatus"] == "completed"
        assert body["source"] == "redis"
    assert elapsed < 3.0


def test_redis_connections_per_worker_stay_constant(live_server, private_redis):
    redis_server = private_redis()
    server = live_server(REDIS_URL=redis_server.url)
    watcher = redis.Redis.from_url(
        redis_server.url, decode_responses=True, client_name="test-watcher"
    )

    def app_connections() -> int:
        return sum(1 for c in watcher.client_list() if c.get("name") != "test-watcher")

    orders = [create(server) for _ in range(200)]
    waits = [gevent.spawn(wait, server, order) for order in orders]
    servers.wait_until(lambda: parked(server) == len(orders), 20, message="200 waits held")
    held = app_connections()

    payers = [gevent.spawn(pay, server, order) for order in orders]
    gevent.joinall(payers, timeout=30, raise_error=True)
    answers = [w.get(timeout=30) for w in waits]
    assert all(a.status_code == 200 and a.json()["changed"] for a in answers)

    # One pub/sub connection plus the bounded command pool (REDIS_POOL_SIZE=3), whether
    # 200 waits are held and 200 webhooks publish, or nothing at all.
    assert 1 <= held <= 4
    assert app_connections() <= 4
    watcher.close()


def test_embedded_sqlite_without_redis_serves_waits_by_database_polling(live_server):
    with tempfile.TemporaryDirectory() as folder:
        database_url = f"sqlite:///{Path(folder) / 'orders.db'}"
        servers.flask_db_upgrade({"DATABASE_URL": database_url})
        server = live_server(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{servers.free_port()}/0",
            FALLBACK_DB_POLL_INTERVAL=0.3,
        )
        order = create(server)
        held = gevent.spawn(wait, server, order)
        gevent.sleep(0.5)
        assert not held.ready()

        assert pay(server, order).status_code == 200  # Redis down never fails the webhook
        body = held.get(timeout=5).json()
        assert body["changed"] is True and body["paymentStatus"] == "completed"
        assert body["source"] == "poll"

        lines = [line for line in server.output().splitlines() if "Redis unreachable" in line]
        assert len(lines) == 1, server.output()
        assert "database polling" in lines[0]
        assert requests.get(server.url + "/readyz", timeout=5).json()["checks"]["redis"] == "down"


def test_a_webhook_blocked_on_a_locked_row_stalls_nothing_else(live_server, pg_url):
    """psycopg2 yields to gevent (wsgi.py): one worker keeps serving while a query blocks."""
    server = live_server()
    locked, other = create(server), create(server)
    blocker = psycopg2.connect(pg_url)
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT id FROM orders WHERE id = %s FOR UPDATE", (locked["orderId"],))
        stuck = gevent.spawn(pay, server, locked)
        gevent.sleep(0.3)
        assert not stuck.ready(), "the webhook for the locked order should be waiting"

        held = gevent.spawn(wait, server, other)
        gevent.sleep(0.1)
        started = time.monotonic()
        assert pay(server, other).status_code == 200
        answer = held.get(timeout=5)
        elapsed = time.monotonic() - started
        assert answer.json()["changed"] is True and answer.json()["source"] == "redis"
        assert elapsed < 0.5, f"order B took {elapsed * 1000:.0f} ms while A was locked"
        assert not stuck.ready()
    finally:
        blocker.rollback()
        blocker.close()
    assert stuck.get(timeout=10).status_code == 200


# Embedded SQLite has no row locks (FOR UPDATE is a no-op): the version check on the
# UPDATE is what keeps two workers from both settling an order.
def test_concurrent_callbacks_on_sqlite_settle_an_order_only_once(live_server):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "orders.db"
        database_url = f"sqlite:///{path}"
        servers.flask_db_upgrade({"DATABASE_URL": database_url})
        first = live_server(DATABASE_URL=database_url)
        second = live_server(DATABASE_URL=database_url)
        order = requests.post(first.url + "/api/orders", json=order_body(), timeout=10).json()

        def deliver(server, result_code):
            body = callback_body(order["orderNumber"], result_code=result_code)
            headers = {
                "X-Webhook-Signature": sign(body, WEBHOOK_SECRET),
                "Content-Type": "application/json",
            }
            return requests.post(
                server.url + "/api/payhero/callback", data=body, headers=headers, timeout=30
            )

        # Another writer holds SQLite's write lock for a moment (a slow webhook elsewhere):
        # both deliveries read the order, then queue for the lock.
        blocker = sqlite3.connect(path, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            paid = gevent.spawn(deliver, first, 0)
            cancelled = gevent.spawn(deliver, second, 1032)
            gevent.sleep(1.0)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        answers = [paid.get(timeout=30).json(), cancelled.get(timeout=30).json()]

        final = requests.get(
            f"{first.url}/api/orders/{order['orderId']}",
            headers={"Authorization": f"Bearer {order['accessToken']}"},
            timeout=10,
        ).json()
        settled = [a for a in answers if a["changed"]]
        assert len(settled) == 1, f"both deliveries settled the order: {answers}"
        assert final["paymentStatus"] == settled[0]["paymentStatus"]
        assert final["version"] == 2


def test_parked_waits_answer_like_immediate_ones_on_delivery_and_at_their_deadline(live_server):
    """Held waits are parked by their socket (app/realtime/parking.py): the answers written
    by the lot carry the same headers and fields as the route's own, on a delivery and, in
    one batch, at their deadline."""
    server = live_server()
    paid, idle = create(server), [create(server) for _ in range(20)]
    immediate = wait(server, paid, timeout_ms=0)
    held = gevent.spawn(wait, server, paid, timeout_ms=20_000)
    expiring = [gevent.spawn(wait, server, order, timeout_ms=1_500) for order in idle]
    servers.wait_until(lambda: parked(server) == 21, 10, message="21 waits parked")
    assert pay(server, paid).status_code == 200

    delivered = held.get(timeout=10)
    expired = [w.get(timeout=10) for w in expiring]
    for answer in [delivered, *expired]:
        assert answer.status_code == 200
        for header in ("Content-Type", "X-Content-Type-Options", "Referrer-Policy"):
            assert answer.headers[header] == immediate.headers[header], header
        assert set(answer.json()) == set(immediate.json())
    body = delivered.json()
    assert (body["source"], body["changed"], body["paymentStatus"]) == ("redis", True, "completed")
    for order, answer in zip(idle, expired, strict=True):
        body = answer.json()
        assert (body["orderId"], body["source"], body["changed"]) == (
            order["orderId"],
            "timeout",
            False,
        )
    servers.wait_until(lambda: parked(server) == 0, 5, message="the lot empty")
