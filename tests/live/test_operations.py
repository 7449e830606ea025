"""Operating the service on real gunicorn servers: Prometheus metrics summed over workers and
moving with the traffic, readiness with short timeouts and detail, structured JSON logs that
carry no secret."""

import json
import re
import time

import gevent
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.orders import events
from tests.support import servers
from tests.support.helpers import CUSTOMER, WEBHOOK_SECRET, callback_body
from tests.support.live import create, parked, pay, wait

Samples = dict[tuple[str, tuple], float]


def scrape(server) -> Samples:
    response = requests.get(server.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def readyz(server) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = requests.get(server.url + "/readyz", timeout=10)
    return response.status_code, response.json(), time.monotonic() - started


# -- metrics -------------------------------------------------------------------------------


def test_metrics_sum_every_worker_and_move_with_waits_and_webhooks(live_server):
    server = live_server(workers=2)
    servers.eventually(
        lambda: value(scrape(server), "orderwait_hub_connected") == 2, 10, "both hubs connected"
    )
    orders = [create(server) for _ in range(6)]
    before = scrape(server)

    waits = [gevent.spawn(wait, server, order) for order in orders]
    # Whichever worker answers the scrape, it counts the waits of both.
    servers.eventually(
        lambda: value(scrape(server), "orderwait_waits_held") == 6, 10, "six waits held"
    )
    for order in orders:
        assert pay(server, order).status_code == 200
    answers = [w.get(timeout=10) for w in waits]
    assert {a.json()["source"] for a in answers} == {"redis"}
    assert pay(server, orders[0]).json()["duplicate"] is True
    unsigned = requests.post(
        server.url + "/api/payhero/callback",
        data=callback_body(orders[1]["orderNumber"]),
        headers={"Content-Type": "application/json", "X-Webhook-Signature": "sha256=00"},
        timeout=5,
    )
    assert unsigned.status_code == 401

    servers.eventually(
        lambda: value(scrape(server), "orderwait_waits_held") == 0, 5, "waits released"
    )
    after = scrape(server)
    assert moved(before, after, "orderwait_waits_answered_total", source="redis") == 6
    assert moved(before, after, "orderwait_webhooks_total", outcome="accepted") == 6
    assert moved(before, after, "orderwait_webhooks_total", outcome="duplicate") == 1
    assert moved(before, after, "orderwait_webhooks_total", outcome="rejected") == 1
    for histogram in ("orderwait_delivery_seconds", "orderwait_dispatch_seconds"):
        assert moved(before, after, histogram + "_count", source="redis") == 6
        total = moved(before, after, histogram + "_sum", source="redis")
        assert 0 < total < 6 * 2.0, (histogram, total)  # each well under the 2 s bound
    # The delivery includes the webhook's commit and publish; the dispatch only the worker.
    assert moved(before, after, "orderwait_delivery_seconds_sum", source="redis") >= moved(
        before, after, "orderwait_dispatch_seconds_sum", source="redis"
    )
    # Quiet now: scrapes agree, whichever worker answers each.
    traffic = ("orderwait_waits", "orderwait_webhooks", "orderwait_delivery", "orderwait_dispatch")
    scrapes = [
        {key: v for key, v in scrape(server).items() if key[0].startswith(traffic)}
        for _ in range(6)
    ]
    assert all(s == scrapes[0] for s in scrapes), scrapes


def test_metrics_show_database_polling_while_redis_is_away(live_server, private_redis):
    redis_server = private_redis()
    server = live_server(REDIS_URL=redis_server.url, FALLBACK_DB_POLL_INTERVAL=0.2)
    order = create(server)
    held = gevent.spawn(wait, server, order, timeout_ms=20_000)
    servers.eventually(lambda: parked(server) == 1, 10, "a wait held")
    before = scrape(server)
    assert value(before, "orderwait_hub_connected") == 1

    redis_server.stop()
    servers.eventually(
        lambda: value(scrape(server), "orderwait_hub_connected") == 0, 10, "the hub noticing"
    )
    gevent.sleep(1.0)
    during = scrape(server)
    assert moved(before, during, "orderwait_fallback_queries_total", kind="orders") >= 3
    assert moved(before, during, "orderwait_fallback_mode_seconds_total") > 0.5

    private_redis(redis_server.port)
    servers.eventually(
        lambda: value(scrape(server), "orderwait_hub_connected") == 1, 10, "back on pub/sub"
    )
    assert moved(before, scrape(server), "orderwait_hub_reconnects_total") == 1
    assert pay(server, order).status_code == 200
    assert held.get(timeout=10).json()["paymentStatus"] == "completed"


# -- readiness -----------------------------------------------------------------------------


def test_readyz_says_degraded_with_redis_stopped_or_frozen(live_server, private_redis):
    redis_server = private_redis()
    server = live_server(REDIS_URL=redis_server.url, READYZ_TIMEOUT=0.5)
    status, body, _ = readyz(server)
    assert (status, body["status"]) == (200, "ok"), body
    assert body["detail"]["database"]["status"] == body["detail"]["redis"]["status"] == "ok"

    redis_server.freeze()
    try:
        status, body, took = readyz(server)
        assert (status, body["status"], body["checks"]["redis"]) == (200, "degraded", "down")
        assert body["detail"]["redis"]["error"] == "no answer within 0.5s"
        assert took < 0.5 + 1.0  # the check's own timeout, not the client's
    finally:
        redis_server.thaw()

    redis_server.stop()
    status, body, _ = readyz(server)
    assert (status, body["status"], body["checks"]["redis"]) == (200, "degraded", "down")
    assert body["checks"]["database"] == "ok"
    assert "refused" in body["detail"]["redis"]["error"].lower()


def test_readyz_is_503_with_the_database_unreachable_or_silent(live_server, pg_url, db_proxy):
    proxied = pg_url.replace(":5432/", f":{db_proxy.port}/")
    server = live_server(DATABASE_URL=proxied, READYZ_TIMEOUT=0.5, DATABASE_CONNECT_TIMEOUT=2)
    assert readyz(server)[0] == 200

    db_proxy.mute()  # the pooled connection stops answering: a hung query
    status, body, took = readyz(server)
    assert (status, body["status"], body["checks"]["database"]) == (503, "unavailable", "down")
    assert body["detail"]["database"]["error"] == "no answer within 0.5s"
    assert body["checks"]["redis"] == "ok"
    assert took < 0.5 + 1.0

    db_proxy.stop()  # nothing listens: refused at once
    status, body, _ = readyz(server)
    assert (status, body["checks"]["database"]) == (503, "down")
    assert "refused" in body["detail"]["database"]["error"].lower()

    db_proxy.start()
    servers.eventually(lambda: readyz(server)[0] == 200, 10, "ready again, no restart")


# -- logs ----------------------------------------------------------------------------------


def test_json_logs_have_one_object_per_event_and_no_secrets(live_server, private_redis):
    redis_server = private_redis()
    server = live_server(REDIS_URL=redis_server.url, LOG_FORMAT="json")
    order = create(server)
    held = gevent.spawn(wait, server, order)
    servers.eventually(lambda: parked(server) == 1, 10, "a wait held")
    assert pay(server, order).status_code == 200
    assert held.get(timeout=10).status_code == 200
    redis_server.stop()
    servers.eventually(lambda: not _hub(server)["connected"], 10, "Redis lost")
    private_redis(redis_server.port)
    servers.eventually(lambda: _hub(server)["connected"], 10, "Redis back")

    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Everything else is the gunicorn master's own lines, before any app code runs.
    assert all(line.startswith("{") or re.match(r"\[\d{4}-", line) for line in lines), lines
    by_event = {}
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        by_event.setdefault(record.get("event"), []).append(record)

    created = by_event["order.created"][0]
    assert created["order_id"] == order["orderId"]
    assert created["email"] == CUSTOMER["email"][0] + "***@example.com"
    started = by_event["wait.started"][0]
    assert (started["order_id"], started["since"]) == (order["orderId"], 1)
    answered = by_event["wait.answered"][0]
    assert (answered["source"], answered["changed"], answered["version"]) == ("redis", True, 2)
    assert 0 < answered["duration_ms"] < 10_000
    webhook = by_event["webhook"][0]
    assert (webhook["outcome"], webhook["payment_status"]) == ("accepted", "completed")
    assert [r["fallback"] for r in by_event["redis.down"]] == ["on"]
    assert [r["fallback"] for r in by_event["redis.up"]] == ["off", "off"]  # start, return

    text = server.output()
    for secret in (order["accessToken"], WEBHOOK_SECRET, CUSTOMER["email"]):
        assert secret not in text


def _hub(server) -> dict:
    return readyz(server)[1]["hub"]


# -- sharded pub/sub -----------------------------------------------------------------------


def test_sharded_pubsub_delivers_and_resubscribes_after_redis_returns(live_server, private_redis):
    redis_server = private_redis()
    server = live_server(REDIS_URL=redis_server.url, REDIS_SHARDED_PUBSUB="1")
    client = redis.Redis.from_url(redis_server.url)
    first, second = create(server), create(server)
    channel = events.channel(first["orderId"])

    held = gevent.spawn(wait, server, first)
    servers.eventually(lambda: parked(server) == 1, 10, "a wait held")
    assert client.execute_command("PUBSUB", "SHARDNUMSUB", channel) == [channel.encode(), 1]
    assert client.pubsub_numsub(channel) == [(channel.encode(), 0)]  # not on classic pub/sub
    assert _hub(server)["sharded"] is True
    assert pay(server, first).status_code == 200
    assert held.get(timeout=10).json()["source"] == "redis"
    servers.eventually(
        lambda: client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 0,
        5,
        "unsubscribed after the last waiter",
    )

    held = gevent.spawn(wait, server, second)
    servers.eventually(lambda: parked(server) == 1, 10, "a wait held")
    redis_server.stop()
    servers.eventually(lambda: not _hub(server)["connected"], 10, "Redis lost")
    client = redis.Redis.from_url(private_redis(redis_server.port).url)
    servers.eventually(lambda: _hub(server)["connected"], 10, "Redis back")
    channel = events.channel(second["orderId"])
    servers.eventually(
        lambda: client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1,
        5,
        "subscribed again",
    )
    assert pay(server, second).status_code == 200
    assert held.get(timeout=10).json()["source"] == "redis"
