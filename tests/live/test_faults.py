"""Fault injection on real servers: private redis-servers killed, frozen and restarted, and a
PostgreSQL made unreachable through a proxy. Every wait must get its answer, with no 5xx."""

import time

import gevent
import pytest
import redis
import requests
from sqlalchemy import event

from app.config import normalize_database_url
from app.extensions import db
from app.orders import events
from app.realtime.hub import Hub
from app.realtime.publish import Publisher
from tests.support import servers
from tests.support.helpers import auth, create_order, order_body, pay
from tests.support.live import create, parked
from tests.support.live import pay as pay_live
from tests.support.live import wait as wait_live
from tests.support.postgres import terminate_backends
from tests.support.servers import eventually

SLACK = 1.5  # seconds of scheduling slack on a shared 2-core machine


def readyz(server) -> dict:
    return requests.get(server.url + "/readyz", timeout=5).json()


# -- Redis lost while waits are held -------------------------------------------------------


def test_redis_killed_while_200_waits_held_loses_no_answer(live_server, private_redis):
    redis_server = private_redis()
    interval, timeout_s = 0.5, 6
    server = live_server(REDIS_URL=redis_server.url, FALLBACK_DB_POLL_INTERVAL=interval)
    orders = [create(server) for _ in range(200)]
    started = time.monotonic()
    waits = [gevent.spawn(wait_live, server, o, timeout_ms=timeout_s * 1000) for o in orders]
    # Parked: past their first database read and blocked on the hub.
    eventually(lambda: readyz(server)["hub"]["parked"] == 200, 15, "200 waits parked")

    redis_server.stop()
    paid, unpaid = orders[:100], orders[100:]
    payments = [gevent.spawn(pay_live, server, order) for order in paid]
    gevent.joinall(payments, timeout=20, raise_error=True)
    assert [p.value.status_code for p in payments] == [200] * 100  # the database is the truth
    committed_at = time.monotonic()

    gevent.joinall(waits[:100], timeout=interval + SLACK + 5)
    delays = []
    for greenlet, order in zip(waits[:100], paid, strict=True):
        assert greenlet.ready(), "a paid order's wait was not answered"
        body = greenlet.value.json()
        assert greenlet.value.status_code == 200
        assert body["orderId"] == order["orderId"]
        assert body["changed"] is True and body["paymentStatus"] == "completed"
        assert body["source"] == "poll"
        delays.append(time.monotonic() - committed_at)
    assert max(delays) < interval + SLACK

    # The others keep waiting until their own timeout, then get the unchanged order.
    assert not any(w.ready() for w in waits[100:])
    gevent.joinall(waits[100:], timeout=timeout_s + 10)
    for greenlet, order in zip(waits[100:], unpaid, strict=True):
        assert greenlet.value.status_code == 200
        body = greenlet.value.json()
        assert body["orderId"] == order["orderId"]
        assert body["changed"] is False and body["source"] == "timeout"
    assert time.monotonic() - started >= timeout_s
    assert "database polling" in server.output()


def test_fallback_polls_the_database_once_per_interval_whatever_the_waiters(
    make_app, private_redis
):
    redis_server = private_redis()
    interval = 0.2
    app = make_app(REDIS_URL=redis_server.url, FALLBACK_DB_POLL_INTERVAL=interval)
    client = app.test_client()
    orders = [create_order(client) for _ in range(200)]
    hub = app.extensions["hub"]
    waits = [
        gevent.spawn(
            client.get, f"/api/orders/{o['orderId']}/wait?timeout=8000&since=1", headers=auth(o)
        )
        for o in orders
    ]
    eventually(lambda: hub.parked == 200, 10, "200 waiters parked")

    statements = []
    with app.app_context():
        engine = db.engine

    def record(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    redis_server.stop()
    eventually(lambda: hub.redis_down, 5, "hub on database polling")
    gevent.sleep(0.1)
    event.listen(engine, "before_cursor_execute", record)
    window = 1.0
    gevent.sleep(window)
    event.remove(engine, "before_cursor_execute", record)

    polls = [(sql, params) for sql, params in statements if "orders.id IN" in sql]
    # One query per interval for all 200 watched orders, nothing per waiter.
    assert window / interval - 2 <= len(polls) <= window / interval + 1, len(polls)
    assert len(statements) == len(polls)
    for _sql, params in polls:
        assert len(params) == 200
    gevent.killall(waits)


# -- Redis back ------------------------------------------------------------------------------


def test_redis_back_delivers_the_lost_publish_and_resumes_pubsub(live_server, private_redis):
    redis_server = private_redis()
    port = redis_server.port
    # A poll interval longer than the test: only the re-read on recovery can deliver. The
    # webhook goes to another instance, whose failed publish cannot make this one poll.
    server = live_server(REDIS_URL=redis_server.url, FALLBACK_DB_POLL_INTERVAL=60)
    other = live_server(REDIS_URL=redis_server.url, FALLBACK_DB_POLL_INTERVAL=60)
    order = create(server)
    held = gevent.spawn(wait_live, server, order, timeout_ms=30_000)
    eventually(lambda: parked(server) == 1, 10, "wait held")

    redis_server.stop()
    eventually(lambda: readyz(server)["checks"]["pubsub"] == "database-polling", 10, "fallback")
    assert pay_live(other, order).status_code == 200  # its publish is lost
    gevent.sleep(0.5)
    assert not held.ready()

    restarted_at = time.monotonic()
    private_redis(port)
    body = held.get(timeout=10).json()
    recovered_in = time.monotonic() - restarted_at
    assert body["changed"] is True and body["paymentStatus"] == "completed"
    assert body["source"] == "poll"  # the hub's one database re-read after reconnecting
    assert recovered_in < 5.0

    eventually(lambda: readyz(server)["status"] == "ok", 5, "readyz ok again")
    fresh = create(server)
    waiting = gevent.spawn(wait_live, server, fresh)
    eventually(lambda: parked(server) == 1, 10, "fresh wait held")
    sent = time.monotonic()
    assert pay_live(server, fresh).status_code == 200
    answer = waiting.get(timeout=5).json()
    assert answer["source"] == "redis"
    assert time.monotonic() - sent < 0.5


def test_failed_publish_while_connected_wakes_waiters_by_a_poll(make_app):
    """Redis answers the hub but the publish fails (say, the command pool timed out)."""
    app = make_app(FALLBACK_DB_POLL_INTERVAL=60)
    client = app.test_client()
    hub = app.extensions["hub"]
    order = create_order(client)
    # Built like the app's own client (a pool): redis-py's stock client retries with backoff.
    unreachable = redis.Redis(
        connection_pool=redis.ConnectionPool(port=servers.free_port(), socket_connect_timeout=0.5)
    )
    app.extensions["publisher"] = Publisher(unreachable, on_failure=hub.request_poll)

    held = gevent.spawn(
        client.get,
        f"/api/orders/{order['orderId']}/wait?timeout=20000&since=1",
        headers=auth(order),
    )
    eventually(lambda: hub.parked == 1, 5, "wait parked")
    assert hub.connected
    sent = time.monotonic()
    assert pay(client, order).status_code == 200
    body = held.get(timeout=5).get_json()
    assert body["changed"] is True and body["source"] == "poll"
    assert time.monotonic() - sent < 2.0


def test_redis_down_at_start_then_appears(live_server, private_redis):
    port = servers.free_port()
    server = live_server(REDIS_URL=f"redis://127.0.0.1:{port}/0", FALLBACK_DB_POLL_INTERVAL=0.3)
    # The hub's first connection attempt runs once the worker is up: wait for its verdict.
    eventually(lambda: "Redis unreachable" in server.output(), 5, "the start-up log line")
    unreachable = [line for line in server.output().splitlines() if "Redis unreachable" in line]
    assert len(unreachable) == 1 and "database polling" in unreachable[0]

    # Every endpoint serves.
    order = create(server)
    token = {"Authorization": f"Bearer {order['accessToken']}"}
    assert (
        requests.get(
            f"{server.url}/api/orders/{order['orderId']}", headers=token, timeout=5
        ).status_code
        == 200
    )
    assert readyz(server)["status"] == "degraded"
    held = gevent.spawn(wait_live, server, order)
    gevent.sleep(0.3)
    assert pay_live(server, order).status_code == 200
    assert held.get(timeout=5).json()["source"] == "poll"

    appeared_at = time.monotonic()
    private_redis(port)
    eventually(lambda: readyz(server)["status"] == "ok", 5, "switch to Redis")
    assert time.monotonic() - appeared_at < 5.0

    fresh = create(server)
    waiting = gevent.spawn(wait_live, server, fresh)
    eventually(lambda: parked(server) == 1, 10, "wait held")
    assert pay_live(server, fresh).status_code == 200
    assert waiting.get(timeout=5).json()["source"] == "redis"


# -- half-open and silent subscribers ------------------------------------------------------


def test_frozen_redis_is_detected_within_seconds(live_server, private_redis):
    redis_server = private_redis()
    server = live_server(
        REDIS_URL=redis_server.url,
        FALLBACK_DB_POLL_INTERVAL=0.3,
        HUB_CANARY_INTERVAL=0.5,
        HUB_CANARY_TIMEOUT=1.0,
        REDIS_SOCKET_TIMEOUT=1.0,
    )
    order = create(server)
    held = gevent.spawn(wait_live, server, order, timeout_ms=20_000)
    eventually(lambda: parked(server) == 1, 10, "wait held")

    redis_server.freeze()  # connections stay open; nothing answers
    try:
        frozen_at = time.monotonic()
        eventually(
            lambda: readyz(server)["checks"]["pubsub"] == "database-polling", 10, "the hub noticing"
        )
        detected_in = time.monotonic() - frozen_at
        assert detected_in < 4.0
        assert pay_live(server, order).status_code == 200
        body = held.get(timeout=5).json()
        assert body["changed"] is True and body["source"] == "poll"
    finally:
        redis_server.thaw()
    eventually(lambda: readyz(server)["status"] == "ok", 10, "back on pub/sub")


@pytest.fixture
def silent_hub(private_redis):
    """A hub whose pub/sub connection goes through a proxy; its canary publishes do not."""
    redis_server = private_redis()
    proxy = servers.TcpProxy(redis_server.port)
    direct = redis.Redis(port=redis_server.port, decode_responses=True)
    hub = Hub(
        f"redis://127.0.0.1:{proxy.port}/0",
        publisher=direct,
        poll_interval=60,
        canary_interval=0.3,
        canary_timeout=0.6,
    )
    hub.start()
    yield hub, proxy, direct
    hub.stop()
    proxy.stop()
    direct.close()


def test_subscription_that_silently_stops_delivering_is_replaced(silent_hub):
    hub, proxy, direct = silent_hub
    versions = {"7": 3}
    hub.add_poll_source(
        "order:status:",
        lambda ids: {i: (versions[i], f"v{versions[i]}") for i in ids if i in versions},
    )
    eventually(lambda: hub.connected, 5, "connected")
    watch = hub.watch("order:status:7")
    assert direct.publish("order:status:7", "before") == 1
    assert watch.next(2).data == "before"

    proxy.mute()  # Redis still counts the hub as a subscriber; nothing reaches it any more
    muted_at = time.monotonic()
    assert direct.publish("order:status:7", "lost") == 1
    # The canary's missing echo is noticed; the hub reconnects and re-reads the database.
    delivery = watch.next(5)
    assert delivery is not None and delivery.source == "poll" and delivery.data == "v3"
    assert time.monotonic() - muted_at < 3.0
    assert hub.reconnects == 1 and hub.connected

    assert direct.publish("order:status:7", "after") == 1
    assert watch.next(2).data == "after"
    watch.close()


# -- database down ---------------------------------------------------------------------------


def test_database_down_webhook_503_waits_served_from_cache_and_recovery(make_app, pg_url, db_proxy):
    proxied_url = normalize_database_url(pg_url).replace(":5432/", f":{db_proxy.port}/")
    app = make_app(SQLALCHEMY_DATABASE_URI=proxied_url, DATABASE_CONNECT_TIMEOUT=2)
    client = app.test_client()
    other_host = make_app().test_client()  # same database and Redis, its own connection
    order, uncached = create_order(client), create_order(client)
    app.extensions["hub"].start()
    eventually(lambda: app.extensions["hub"].connected, 5, "hub connected")

    db_proxy.stop()

    response = pay(client, order)
    assert response.status_code == 503
    assert response.get_json()["success"] is False
    assert "database" in response.get_json()["error"]
    assert int(response.headers["Retry-After"]) >= 1

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert int(ready.headers["Retry-After"]) >= 1
    assert ready.get_json()["checks"]["database"] == "down"

    # A wait is authorized and answered from the cache, and woken by the event of a change
    # another host could commit.
    held = gevent.spawn(
        client.get,
        f"/api/orders/{order['orderId']}/wait?timeout=10000&since=1",
        headers=auth(order),
    )
    gevent.sleep(0.3)
    assert not held.ready()
    assert pay(other_host, order).status_code == 200
    body = held.get(timeout=5).get_json()
    assert body["changed"] is True and body["source"] == "redis"

    # Without a cached state there is nothing to answer from: a clear 503.
    redis.Redis.from_url(app.config["REDIS_URL"]).delete(events.latest_key(uncached["orderId"]))
    response = client.get(
        f"/api/orders/{uncached['orderId']}/wait?timeout=0&since=1", headers=auth(uncached)
    )
    assert response.status_code == 503
    assert "database unavailable" in response.get_json()["error"]

    # Back with no restart.
    db_proxy.start()
    assert client.get("/readyz").status_code == 200
    assert pay(client, uncached).status_code == 200
    got = client.get(f"/api/orders/{uncached['orderId']}", headers=auth(uncached)).get_json()
    assert got["paymentStatus"] == "completed" and got["version"] == 2


def test_webhook_during_database_outage_writes_nothing(make_app, pg_url, db_proxy):
    proxied_url = normalize_database_url(pg_url).replace(":5432/", f":{db_proxy.port}/")
    app = make_app(SQLALCHEMY_DATABASE_URI=proxied_url, DATABASE_CONNECT_TIMEOUT=2)
    client = app.test_client()
    order = create_order(client)
    db_proxy.stop()
    assert pay(client, order).status_code == 503
    db_proxy.start()
    got = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert got["paymentStatus"] == "processing" and got["version"] == 1
    # The provider's retry then goes through, once.
    assert pay(client, order).get_json()["changed"] is True
    assert pay(client, order).get_json()["duplicate"] is True


def test_idle_database_connections_are_checked_before_use(make_app, pg_url, db_proxy):
    """PostgreSQL connections are pinged only after DATABASE_PING_AFTER_IDLE: a pooled
    connection that died while idle (the server restarted) is replaced, not handed out."""
    proxied_url = normalize_database_url(pg_url).replace(":5432/", f":{db_proxy.port}/")
    app = make_app(SQLALCHEMY_DATABASE_URI=proxied_url, DATABASE_PING_AFTER_IDLE=0.2)
    client = app.test_client()
    order = create_order(client)  # the pool now holds a connection through the proxy

    db_proxy.stop()  # every connection through it is cut while the pool holds it idle
    db_proxy.start()
    time.sleep(0.3)

    response = client.get(f"/api/orders/{order['orderId']}", headers=auth(order))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["orderId"] == order["orderId"]


def test_requests_meeting_connections_that_died_while_pooled_get_no_503(
    live_server, pg_url, redis_client
):
    """PostgreSQL ended every backend (a restart, a pooler recycling them) while the
    worker's pool held them: the next request on a dead one is retried on a fresh one."""
    # One pooled connection, which each step below meets dead. Idle pings would replace it
    # first: only the retry is under test.
    server = live_server(DATABASE_POOL_SIZE=1, DATABASE_PING_AFTER_IDLE=3600)
    order = create(server)

    def show() -> requests.Response:
        url = f"{server.url}/api/orders/{order['orderId']}"
        return requests.get(url, headers=auth(order), timeout=10)

    def pool_dropped() -> None:
        assert show().status_code == 200  # the pool holds a live connection, this read's
        assert terminate_backends(pg_url) >= 1

    pool_dropped()
    response = requests.post(server.url + "/api/orders", json=order_body(), timeout=10)
    assert response.status_code == 201, response.text

    pool_dropped()
    response = show()
    assert response.status_code == 200, response.text

    pool_dropped()
    redis_client.delete(events.latest_key(order["orderId"]))  # the wait must read the database
    response = wait_live(server, order, timeout_ms=0, since=0)
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "db"

    pool_dropped()
    response = pay_live(server, order)
    assert response.status_code == 200, response.text
    assert response.json()["changed"] is True
    assert show().json()["paymentStatus"] == "completed"

    retried = [line for line in server.output().splitlines() if "died while pooled" in line]
    for unit in ("create_order", "authorize", "read_order", "apply_callback"):
        assert sum(f" {unit} runs again" in line for line in retried) == 1, retried
