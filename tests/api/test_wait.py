"""The long-poll wait endpoint, in-process on PostgreSQL and the shared Redis."""

import time

import gevent
import pytest

from app.extensions import db
from app.orders import events
from tests.support.helpers import auth, create_order, pay, statements_run


def wait_url(order: dict, **params) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"/api/orders/{order['orderId']}/wait?{query}"


def hold(client, order: dict, **params) -> gevent.Greenlet:
    """Start a wait in its own greenlet; returns it with .started set to the start time."""
    greenlet = gevent.spawn(client.get, wait_url(order, **params), headers=auth(order))
    gevent.sleep(0)  # let it register with the hub before the caller goes on
    return greenlet


def held_waiters(app) -> int:
    return app.extensions["hub"].stats()["waiters"]


def wait_for_waiters(app, count: int, timeout: float = 5.0) -> None:
    """Until `count` waits are parked: past their first reads and blocked on the hub."""
    hub = app.extensions["hub"]
    deadline = time.monotonic() + timeout
    while hub.parked < count:
        assert time.monotonic() < deadline, f"only {hub.parked} of {count} waits parked"
        gevent.sleep(0.01)


def test_wait_answers_within_ms_of_webhook(app, client):
    order = create_order(client)
    waiting = hold(client, order, timeout=10_000, since=1)
    wait_for_waiters(app, 1)

    sent = time.monotonic()
    assert pay(client, order).status_code == 200
    response = waiting.get(timeout=5)
    elapsed = time.monotonic() - sent

    body = response.get_json()
    assert response.status_code == 200
    assert body["changed"] is True
    assert body["source"] == "redis"
    assert body["paymentStatus"] == "completed" and body["status"] == "paid"
    assert body["version"] == 2
    assert elapsed < 1.0, f"answered {elapsed * 1000:.0f} ms after the webhook"


def test_wait_times_out_with_current_state(client):
    order = create_order(client)
    started = time.monotonic()
    response = client.get(wait_url(order, timeout=300, since=1), headers=auth(order))
    elapsed = time.monotonic() - started

    body = response.get_json()
    assert response.status_code == 200
    assert body["changed"] is False
    assert body["source"] == "timeout"
    assert body["paymentStatus"] == "processing" and body["version"] == 1
    assert 0.3 <= elapsed < 2.0


def test_wait_without_since_waits_for_the_next_change(app, client):
    order = create_order(client)
    waiting = hold(client, order, timeout=10_000)
    wait_for_waiters(app, 1)
    gevent.sleep(0.1)
    assert not waiting.ready(), "a bare wait must not answer with the current state"

    pay(client, order)
    body = waiting.get(timeout=5).get_json()
    assert body["changed"] is True and body["version"] == 2


def test_wait_since_older_version_answers_at_once(redis_client, client):
    order = create_order(client)
    url = wait_url(order, timeout=10_000, since=0)
    body = client.get(url, headers=auth(order)).get_json()
    assert body["changed"] is True and body["version"] == 1
    assert body["source"] == "cache"  # cached when the order was created

    redis_client.delete(events.latest_key(order["orderId"]))
    body = client.get(url, headers=auth(order)).get_json()
    assert body["changed"] is True and body["version"] == 1
    assert body["source"] == "db"


def test_wait_since_current_version_blocks(client):
    order = create_order(client)
    started = time.monotonic()
    body = client.get(wait_url(order, timeout=250, since=1), headers=auth(order)).get_json()
    assert time.monotonic() - started >= 0.25
    assert body["changed"] is False


def test_wait_on_a_change_already_made_answers_from_cache(client, redis_client):
    order = create_order(client)
    pay(client, order)
    assert redis_client.exists(events.latest_key(order["orderId"]))

    started = time.monotonic()
    body = client.get(wait_url(order, timeout=10_000, since=1), headers=auth(order)).get_json()
    assert time.monotonic() - started < 1.0
    assert body["source"] == "cache"
    assert body["changed"] is True and body["paymentStatus"] == "completed"


def test_wait_falls_back_to_db_on_cache_miss(client, redis_client):
    order = create_order(client)
    pay(client, order)
    redis_client.delete(events.latest_key(order["orderId"]))

    body = client.get(wait_url(order, timeout=10_000, since=1), headers=auth(order)).get_json()
    assert body["source"] == "db"
    assert body["changed"] is True and body["version"] == 2


def test_wait_on_terminal_order_answers_at_once(client):
    order = create_order(client)
    pay(client, order, result_code=1032)

    for params in ({"since": 2}, {}):
        started = time.monotonic()
        response = client.get(wait_url(order, timeout=10_000, **params), headers=auth(order))
        body = response.get_json()
        assert time.monotonic() - started < 1.0, params
        assert body["paymentStatus"] == "cancelled"
        assert body["changed"] is False, params


def test_wait_timeout_is_held_at_most_the_servers_maximum(make_app):
    app = make_app(LONGPOLL_MAX_TIMEOUT_MS=300)
    client = app.test_client()
    order = create_order(client)

    started = time.monotonic()
    body = client.get(wait_url(order, timeout=10**9, since=1), headers=auth(order)).get_json()
    assert 0.3 <= time.monotonic() - started < 2.0
    assert body["source"] == "timeout"

    started = time.monotonic()
    body = client.get(wait_url(order, timeout=0, since=1), headers=auth(order)).get_json()
    assert time.monotonic() - started < 0.5
    assert body["changed"] is False


@pytest.mark.parametrize(
    "params, field",
    [
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": "1.5"}, "timeout"),
        ({"since": "two"}, "since"),
        ({"since": "-1"}, "since"),
        # The documented bounds: outside them is bad input, not clamped.
        ({"timeout": "-5"}, "timeout"),
        ({"timeout": str(2**31)}, "timeout"),
        ({"since": str(2**31)}, "since"),
        ({"timeout": " 5"}, "timeout"),
    ],
)
def test_wait_rejects_bad_parameters(client, params, field):
    order = create_order(client)
    response = client.get(wait_url(order, **params), headers=auth(order))
    assert response.status_code == 400
    body = response.get_json()
    assert body["success"] is False and field in body["error"]
    assert [error["field"] for error in body["errors"]] == [field]


def test_wait_names_every_bad_parameter_at_once(client):
    order = create_order(client)
    response = client.get(wait_url(order, timeout="soon", since="-1"), headers=auth(order))
    assert response.status_code == 400
    assert {error["field"] for error in response.get_json()["errors"]} == {"timeout", "since"}


def test_wait_token_rules(client):
    order = create_order(client)
    url = wait_url(order, timeout=0, since=1)

    assert client.get(url).status_code == 401
    wrong = client.get(url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 404
    unknown = client.get(
        "/api/orders/00000000-0000-4000-8000-000000000000/wait?timeout=0",
        headers=auth(order),
    )
    assert unknown.status_code == 404
    assert wrong.get_json()["error"] == unknown.get_json()["error"]
    assert client.get(f"{url}&token={order['accessToken']}").status_code == 200


def test_wait_refuses_wrong_token_even_on_a_cache_hit(client, redis_client):
    order = create_order(client)
    pay(client, order)
    assert redis_client.exists(events.latest_key(order["orderId"]))
    response = client.get(
        wait_url(order, timeout=0, since=1), headers={"Authorization": "Bearer forged"}
    )
    assert response.status_code == 404
    assert "customer" not in response.get_json()


def test_held_waits_hold_no_database_connection(app, client):
    orders = [create_order(client) for _ in range(30)]
    waits = [hold(client, order, timeout=10_000, since=1) for order in orders]
    wait_for_waiters(app, len(orders))

    # Each wait reads the database once after registering; then it must hand back its
    # connection while it stays held.
    with app.app_context():
        deadline = time.monotonic() + 5
        while db.engine.pool.checkedout() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert db.engine.pool.checkedout() == 0
    assert not any(w.ready() for w in waits)

    for order in orders:
        pay(client, order)
    answers = [w.get(timeout=10).get_json() for w in waits]
    assert all(a["changed"] and a["paymentStatus"] == "completed" for a in answers)


def test_300_concurrent_waits_on_postgresql_all_answered(make_app):
    """Far more waits than SQLAlchemy's default pool (5 + 10 overflow) has connections."""
    app = make_app(
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
    )
    client = app.test_client()
    count = 300
    orders = [create_order(client) for _ in range(count)]
    with app.app_context():
        pool_limit = db.engine.pool.size() + db.engine.pool._max_overflow
    assert pool_limit == 15
    assert count >= 20 * pool_limit

    waits = [hold(client, order, timeout=30_000, since=1) for order in orders]
    wait_for_waiters(app, count, timeout=20)

    payers = [gevent.spawn(pay, app.test_client(), order) for order in orders]
    gevent.joinall(payers, timeout=30, raise_error=True)
    assert all(p.value.status_code == 200 for p in payers)

    answers = [w.get(timeout=30) for w in waits]
    assert [a.status_code for a in answers] == [200] * count
    bodies = [a.get_json() for a in answers]
    assert all(b["changed"] and b["paymentStatus"] == "completed" for b in bodies)
    assert {b["orderId"] for b in bodies} == {o["orderId"] for o in orders}
    assert held_waiters(app) == 0


def test_a_burst_of_waits_reads_the_database_a_bounded_number_at_a_time(make_app):
    """WAITS_OPENING_AT_ONCE: the rest of a burst queues for a turn, so no wait waits past
    the pools' checkout timeouts however many arrive together."""
    from sqlalchemy import event

    app = make_app(WAITS_OPENING_AT_ONCE=3)
    client = app.test_client()
    orders = [create_order(client) for _ in range(60)]
    with app.app_context():
        engine = db.engine
    checked_out, most = 0, 0

    def on_checkout(*_):
        nonlocal checked_out, most
        checked_out += 1
        most = max(most, checked_out)

    def on_checkin(*_):
        nonlocal checked_out
        checked_out -= 1

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        waits = [hold(client, order, timeout=0, since=1) for order in orders]
        answers = [w.get(timeout=20) for w in waits]
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
    assert [a.status_code for a in answers] == [200] * len(orders)
    assert all(a.get_json()["source"] == "timeout" for a in answers)
    assert 1 <= most <= 3


def test_a_wait_reads_its_order_in_one_statement_without_the_orm(any_database_app):
    """PostgreSQL: one SELECT on the driver, in autocommit (the ORM's read ran in a
    transaction: BEGIN, and ROLLBACK at the session's close). SQLite: one SELECT a read,
    no commit (the ORM's read looks the same there). The answer is the order's JSON."""
    client = any_database_app.test_client()
    order = create_order(client)
    with statements_run(any_database_app) as statements:
        # since=0: the cached state is news, so no read at all.
        cached = client.get(f"/api/orders/{order['orderId']}/wait?since=0", headers=auth(order))
    assert cached.get_json()["source"] == "cache" and statements == []
    with statements_run(any_database_app) as statements:
        answer = client.get(
            f"/api/orders/{order['orderId']}/wait?timeout=0&since=1", headers=auth(order)
        )
        stranger = client.get(
            f"/api/orders/{order['orderId']}/wait?timeout=0&since=1&token=not-the-token"
        )
    on_postgresql = any_database_app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    # The wait's read, which is its answer too (its timeout passed already); the stranger is
    # told by the cache.
    assert statements == [("SELECT", True) if on_postgresql else "SELECT"]
    body = answer.get_json()
    assert body["source"] == "timeout" and body["changed"] is False
    shown = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert {k: v for k, v in body.items() if k not in ("changed", "source")} == shown
    assert stranger.status_code == 404
