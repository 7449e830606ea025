"""Admin statistics, their SSE stream, the service status stream and the realtime counts, on
real gunicorn gevent servers with the real Redis and PostgreSQL.

Every stream is read by a greenlet of its own that parses frames into a queue, so each read a
test makes is bounded by a timeout; the streams a test opens are closed when it ends. The
orders table is shared by the whole run, so statistics are compared as differences.
"""

import json
import math
import os
import signal
import time

import gevent
import pytest
import redis
import requests

from app.config import normalize_database_url
from tests.conftest import REDIS_URL
from tests.support import servers
from tests.support.helpers import assert_json_error
from tests.support.live import assert_stream_response, create, hub_stats, parked, pay, wait
from tests.support.sse import Frame, SseStream

ADMIN = "admin-1"
OTHER_ADMIN = "admin-2"
HEARTBEAT = 0.5  # SSE_HEARTBEAT_INTERVAL of the servers below, in seconds
SLACK = 2.0  # scheduling, gunicorn and loopback, generously

STATS_STREAM = "/api/admin/stats/stream"
SERVICES_STREAM = "/api/services/status/stream"
TRIGGER_CHANNEL = "admin:stats:updated"
CACHE_KEY = "admin:stats:cache"
COMPUTATIONS_KEY = "admin:stats:computations"
STATUS_KEY = "service:status"

STATS_FIELDS = {
    "orders",
    "revenuePaid",
    "paymentsLastHour",
    "meanSecondsToPay",
    "webhooks",
    "live",
    "computations",
    "generatedAt",
    "mode",
}


# -- a small SSE client ------------------------------------------------------------------------


@pytest.fixture
def open_stream():
    """Open admin SSE streams (or try to); all of them are closed after the test."""
    opened: list[SseStream] = []

    def open_(server, path: str = STATS_STREAM, *, token=ADMIN, via="header", headers=None):
        headers = dict(headers or {})
        params = None
        if token is not None and via == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif token is not None:
            params = {"token": token}
        stream = SseStream(server.url + path, headers=headers, params=params)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.close()


# -- helpers -----------------------------------------------------------------------------------


def start(live_server, **env):
    """A live server with admin tokens, fast heartbeats and every order change announced;
    the safety-net poll is left long so that syncs come from triggers only."""
    settings = {
        "ADMIN_TOKENS": f"{ADMIN},{OTHER_ADMIN}",
        "SSE_HEARTBEAT_INTERVAL": HEARTBEAT,
        "STATS_SAMPLE_RATE": 1,
        "STATS_SAFETY_POLL_INTERVAL": 60,
        "PRESENCE_INTERVAL": 0.5,
    }
    server = live_server(**{**settings, **env})
    # The stats refresher runs once at start-up, cache and trigger included, possibly after
    # the server answers: let that run finish before a test counts syncs or computations.
    client = redis.Redis.from_url(server_redis_url(env), decode_responses=True)
    try:
        servers.eventually(lambda: client.hexists(STATUS_KEY, "stats-refresher"), 5, "refresher")
    finally:
        client.close()
    return server


def server_redis_url(env: dict) -> str:
    return env.get("REDIS_URL", REDIS_URL)


def admin_request(server, method: str, path: str, token=ADMIN, via="header"):
    headers, params = {}, None
    if token is not None and via == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        params = {"token": token}
    return requests.request(method, server.url + path, headers=headers, params=params, timeout=10)


def realtime_stats(server, token=ADMIN) -> dict:
    response = admin_request(server, "GET", "/api/realtime/stats", token)
    assert response.status_code == 200, response.text
    return response.json()


def assert_refused(stream: SseStream, status: int) -> None:
    """A stream request answered with a JSON error instead of a stream; a 429 says to retry
    after one heartbeat interval, in whole seconds."""
    assert not stream.is_stream, f"expected {status}, got an open stream"
    assert_json_error(stream.response, status)
    if status == 429:
        assert stream.response.headers["Retry-After"] == str(math.ceil(HEARTBEAT))


def next_sync(stream: SseStream, timeout: float) -> tuple[Frame, dict]:
    frame = stream.next_event(timeout)
    assert frame.event == "sync", frame
    return frame, frame.json()


def next_service(stream: SseStream, timeout: float, service: str) -> dict:
    """The next `event: service` report of `service`, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        frame = stream.next_event(deadline - time.monotonic())
        assert frame.event == "service", frame
        body = frame.json()
        if body["service"] == service:
            return body


def computations(client: redis.Redis) -> int:
    return int(client.get(COMPUTATIONS_KEY) or 0)


def refresher_ran(client: redis.Redis) -> bool:
    """The stats refresher's run at start-up is over: cached and reported."""
    return bool(client.exists(CACHE_KEY) and client.hexists(STATUS_KEY, "stats-refresher"))


def stop_server(server) -> None:
    """Quick shutdown of a live server in mid-test (the fixture then only cleans up)."""
    os.killpg(server.proc.pid, signal.SIGQUIT)
    server.proc.wait(15)


# -- the stats stream --------------------------------------------------------------------------


def test_stats_stream_syncs_at_once_then_on_every_webhook(live_server, redis_client, open_stream):
    server = start(live_server)
    stream = open_stream(server)
    assert_stream_response(stream)

    frame, first = next_sync(stream, SLACK)
    assert frame.id == "1"
    assert STATS_FIELDS <= set(first), first
    assert first["mode"] == "pubsub"
    assert set(first["orders"]["byStatus"]) >= {"pending", "paid", "failed", "cancelled"}
    assert first["orders"]["total"] == sum(first["orders"]["byStatus"].values())
    assert set(first["webhooks"]) == {"received", "duplicated", "rejected"}
    assert set(first["live"]) == {"waiters", "streams", "workers"}
    assert isinstance(first["generatedAt"], str) and first["generatedAt"]

    order = create(server)
    assert pay(server, order).status_code == 200
    paid_at = time.monotonic()
    frame, after = next_sync(stream, 1.0)
    assert frame.at - paid_at < 1.0
    assert frame.id == "2"
    assert after["mode"] == "pubsub"
    paid = after["orders"]["byStatus"]["paid"]
    assert paid == first["orders"]["byStatus"]["paid"] + 1, (first, after)
    assert after["orders"]["total"] == first["orders"]["total"] + 1
    assert after["revenuePaid"] == pytest.approx(first["revenuePaid"] + 300)
    assert after["paymentsLastHour"] == first["paymentsLastHour"] + 1
    assert isinstance(after["meanSecondsToPay"], int | float)
    assert after["webhooks"]["received"] == first["webhooks"]["received"] + 1, (first, after)
    assert after["generatedAt"] >= first["generatedAt"]

    # The next payment (after STATS_MIN_PUBLISH_INTERVAL): the next sync, the next id.
    gevent.sleep(0.3)
    assert pay(server, create(server)).status_code == 200
    frame, again = next_sync(stream, 1.0)
    assert frame.id == "3"
    assert again["orders"]["byStatus"]["paid"] == paid + 1
    assert again["webhooks"]["received"] == after["webhooks"]["received"] + 1

    # A reconnecting EventSource continues the ids after its Last-Event-ID.
    again = open_stream(server, headers={"Last-Event-ID": "7"})
    frame, _ = next_sync(again, SLACK)
    assert frame.id == "8"


def test_unsampled_change_is_announced_by_the_trailing_publish(
    live_server, redis_client, open_stream
):
    trailing = 1.0
    server = start(live_server, STATS_SAMPLE_RATE=0, STATS_TRAILING_DELAY=trailing)
    stream = open_stream(server)
    _, first = next_sync(stream, SLACK)

    order = create(server)
    assert pay(server, order).status_code == 200
    paid_at = time.monotonic()
    frame, after = next_sync(stream, trailing + SLACK)
    delay = frame.at - paid_at
    # Not sampled: nothing at once, the trailing announcement within its delay.
    assert trailing * 0.6 <= delay < trailing + SLACK, delay
    assert after["mode"] == "pubsub"
    assert after["orders"]["byStatus"]["paid"] == first["orders"]["byStatus"]["paid"] + 1


def test_safety_net_poll_syncs_a_quiet_stream(live_server, redis_client, open_stream):
    safety = 1.0
    server = start(
        live_server,
        STATS_SAMPLE_RATE=0,
        STATS_TRAILING_DELAY=60,
        STATS_SAFETY_POLL_INTERVAL=safety,
    )
    stream = open_stream(server)
    _, first = next_sync(stream, SLACK)

    order = create(server)
    assert pay(server, order).status_code == 200
    paid_at = time.monotonic()
    frame, after = next_sync(stream, safety + SLACK)
    assert frame.at - paid_at < safety + SLACK
    assert after["mode"] == "poll"
    assert after["orders"]["byStatus"]["paid"] == first["orders"]["byStatus"]["paid"] + 1

    # And it keeps polling, about once per interval.
    frames = [f for f in stream.frames_for(3 * safety + 0.5) if f.is_event]
    assert 2 <= len(frames) <= 5, frames
    assert all(f.event == "sync" and f.json()["mode"] == "poll" for f in frames)
    gaps = [b.at - a.at for a, b in zip([frame, *frames], frames, strict=False)]
    assert all(safety * 0.5 <= gap <= safety + 1.0 for gap in gaps), gaps


def test_three_streams_on_a_worker_share_one_computation_per_trigger(
    live_server, redis_client, open_stream
):
    # A long cache TTL keeps the background refresher (interval TTL/2) out of the way after
    # its run at start-up, which is awaited before any stream opens.
    server = start(live_server, STATS_CACHE_TTL=600)
    servers.eventually(lambda: refresher_ran(redis_client), 5, "the refresher's first run")

    streams = [open_stream(server) for _ in range(3)]
    firsts = [next_sync(stream, SLACK)[1] for stream in streams]
    before = computations(redis_client)
    # Connecting reads the cache: no stream computed anything.
    assert {f["computations"] for f in firsts} == {before}, firsts

    for expected, trigger in enumerate(["webhook", "publish"], start=before + 1):
        if trigger == "webhook":
            assert pay(server, create(server)).status_code == 200
        else:
            assert redis_client.publish(TRIGGER_CHANNEL, repr(time.time())) == 1
        syncs = [next_sync(stream, SLACK)[1] for stream in streams]
        assert [s["computations"] for s in syncs] == [expected] * 3, (trigger, syncs)
        assert len({s["generatedAt"] for s in syncs}) == 1, syncs
        gevent.sleep(0.5)  # a second computation, if any, would land meanwhile
        assert computations(redis_client) == expected, trigger
        for stream in streams:
            extra = [f for f in stream.frames_for(0.1) if f.is_event]
            assert extra == [], (trigger, extra)


def db_poll_syncs(stream: SseStream, count: int, timeout: float) -> list[Frame]:
    """The next `count` syncs in mode db-poll (syncs of another mode before them skipped)."""
    deadline = time.monotonic() + timeout
    polls = []
    while len(polls) < count:
        frame = stream.next_event(deadline - time.monotonic())
        assert frame.event == "sync", frame
        if frame.json()["mode"] == "db-poll":
            polls.append(frame)
    return polls


DB_POLL = 0.5  # STATS_DB_POLL_INTERVAL of the Redis-down tests
DETECT = 1.5  # the hub notices a closed connection at once, a silent one by its canary


def test_when_redis_dies_an_open_stream_starts_polling_the_database_at_its_interval(
    live_server, private_redis, open_stream
):
    """Redis goes while the stream waits for its next trigger: the db-poll syncs must start
    about STATS_DB_POLL_INTERVAL later, not when the (long) safety-net interval runs out."""
    redis_server = private_redis()
    server = start(
        live_server,
        REDIS_URL=redis_server.url,
        STATS_DB_POLL_INTERVAL=DB_POLL,
        STATS_SAFETY_POLL_INTERVAL=30,
    )
    stream = open_stream(server)
    _, first = next_sync(stream, SLACK)
    assert first["mode"] == "pubsub"

    redis_server.stop()
    killed_at = time.monotonic()
    polls = db_poll_syncs(stream, 1, DETECT + DB_POLL + SLACK)
    assert polls[0].at - killed_at < DETECT + DB_POLL + SLACK
    stats = polls[0].json()
    assert stats["orders"]["byStatus"] == first["orders"]["byStatus"]


def test_with_redis_down_the_stream_polls_the_database_then_returns_to_pubsub(
    live_server, private_redis, open_stream
):
    # A short safety net so that the first db-poll sync does not wait long (the test above
    # is about that start); this one is about the cadence and the way back.
    safety = 1.0
    redis_server = private_redis()
    server = start(
        live_server,
        REDIS_URL=redis_server.url,
        STATS_DB_POLL_INTERVAL=DB_POLL,
        STATS_SAFETY_POLL_INTERVAL=safety,
    )
    stream = open_stream(server)
    _, first = next_sync(stream, SLACK)
    assert first["mode"] == "pubsub"

    redis_server.stop()
    polls = db_poll_syncs(stream, 4, DETECT + safety + 4 * DB_POLL + SLACK)
    gaps = [b.at - a.at for a, b in zip(polls, polls[1:], strict=False)]
    assert all(DB_POLL * 0.5 <= gap <= DB_POLL + 1.0 for gap in gaps), gaps
    stats = polls[-1].json()
    assert stats["orders"]["byStatus"] == first["orders"]["byStatus"]
    assert realtime_stats(server)["connections"][0]["lastStatus"] == "db-poll"

    private_redis(redis_server.port)  # Redis is back, empty, on the same port
    servers.eventually(lambda: hub_stats(server)["connected"], 5, "hub reconnected")
    order = create(server)
    assert pay(server, order).status_code == 200
    deadline = time.monotonic() + 3.0
    while True:
        frame = stream.next_event(deadline - time.monotonic())
        body = frame.json()
        if body["mode"] == "pubsub":
            break
        # Before the trigger lands: a last database poll, or the safety net.
        assert body["mode"] in ("db-poll", "poll"), body
    assert body["orders"]["byStatus"]["paid"] == first["orders"]["byStatus"]["paid"] + 1
    assert body["webhooks"]["received"] == 1  # counted in the new (empty) Redis

    # Pub/sub again: no more db-poll syncs.
    later = [f.json()["mode"] for f in stream.frames_for(2 * DB_POLL + 0.5) if f.is_event]
    assert "db-poll" not in later, later


def test_heartbeats_arrive_at_the_heartbeat_interval(live_server, redis_client, open_stream):
    server = start(live_server)
    stream = open_stream(server)
    first, _ = next_sync(stream, SLACK)

    frames = stream.frames_for(5 * HEARTBEAT + 0.25)
    assert all(f.is_heartbeat for f in frames), frames  # a quiet system: nothing else
    assert 4 <= len(frames) <= 6, frames
    gaps = [b.at - a.at for a, b in zip([first, *frames], frames, strict=False)]
    assert all(HEARTBEAT * 0.6 <= gap <= HEARTBEAT + 0.5 for gap in gaps), gaps


# -- authorization and the per-token stream limit ----------------------------------------------

ADMIN_ENDPOINTS = [
    ("GET", "/api/admin/stats"),
    ("GET", STATS_STREAM),
    ("POST", "/api/admin/stats/refresh"),
    ("GET", SERVICES_STREAM),
    ("GET", "/api/realtime/stats"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_admin_endpoints_need_an_admin_token(live_server, redis_client, open_stream, method, path):
    server = start(live_server)
    order = create(server)

    assert_json_error(admin_request(server, method, path, token=None), 401)
    # A real token, but an order's, not an admin's; and a made-up one.
    assert_json_error(admin_request(server, method, path, token=order["accessToken"]), 403)
    assert_json_error(admin_request(server, method, path, token="admin-3", via="query"), 403)
    bearer_without_value = requests.request(
        method, server.url + path, headers={"Authorization": "Bearer "}, timeout=10
    )
    assert_json_error(bearer_without_value, 401)

    for token, via in [(ADMIN, "header"), (OTHER_ADMIN, "query")]:
        if path in (STATS_STREAM, SERVICES_STREAM):
            stream = open_stream(server, path, token=token, via=via)
            assert_stream_response(stream)
            frame = stream.next_event(SLACK)
            assert frame.event == ("sync" if path == STATS_STREAM else "status"), frame
        else:
            response = admin_request(server, method, path, token=token, via=via)
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"].startswith("application/json")
            body = response.json()
            assert isinstance(body, dict) and body.get("success") is not False, body


def hold_three_streams(first, second, open_stream) -> list[SseStream]:
    """SSE_MAX_STREAMS_PER_TOKEN (3) streams of ADMIN: two on `first`, one on `second`."""
    held = [
        open_stream(first, STATS_STREAM),
        open_stream(first, SERVICES_STREAM),
        open_stream(second, STATS_STREAM),
    ]
    for stream in held:
        assert_stream_response(stream)
        stream.next_event(SLACK)
    return held


def test_stream_limit_per_token_counts_streams_on_every_worker(
    live_server, redis_client, open_stream
):
    first, second = start(live_server), start(live_server)
    held = hold_three_streams(first, second, open_stream)

    # The token holds 3 streams across the two servers: a fourth is refused on either.
    for server in (first, second):
        for path in (STATS_STREAM, SERVICES_STREAM):
            refused = open_stream(server, path)
            assert_refused(refused, 429)
            refused.close()

    # Another admin token is not limited by the first one's streams.
    for server in (first, second):
        other = open_stream(server, STATS_STREAM, token=OTHER_ADMIN)
        assert_stream_response(other)
        other.next_event(SLACK)

    # One stream closes: the server sees its client go, and its slot is free at once.
    held[2].close()

    def accepted():
        stream = open_stream(first, STATS_STREAM)
        if not stream.is_stream:
            assert_refused(stream, 429)
            stream.close()
            return None
        return stream

    replacement = servers.wait_until(accepted, SLACK, 0.1, "a free stream slot")
    assert_stream_response(replacement)
    assert next_sync(replacement, SLACK)[0].id == "1"
    assert_refused(open_stream(second, SERVICES_STREAM), 429)


def test_stream_limit_holds_for_streams_held_longer_than_their_lease(
    live_server, redis_client, open_stream
):
    """Held streams renew their slots with each heartbeat: however long they stay open
    (here past the 3-heartbeat lease, with no other stream request meanwhile), a fourth
    stream of the token is refused."""
    first, second = start(live_server), start(live_server)
    hold_three_streams(first, second, open_stream)
    gevent.sleep(3 * HEARTBEAT + 1.0)
    assert_refused(open_stream(first, STATS_STREAM), 429)
    assert_refused(open_stream(second, SERVICES_STREAM), 429)


def test_busy_streams_keep_their_slots(live_server, redis_client, open_stream):
    """Streams that get a sync more often than a heartbeat are still open streams: their
    slots must not expire (the lease is 3 heartbeat intervals). A refused attempt is made
    every round, so the limiter's set is touched often."""
    server = start(live_server, STATS_SAFETY_POLL_INTERVAL=0.2)
    held = [open_stream(server) for _ in range(3)]
    for stream in held:
        assert_stream_response(stream)

    started = time.monotonic()
    while time.monotonic() - started < 3 * HEARTBEAT + 1.0:
        for stream in held:  # syncs keep flowing on every stream
            assert stream.next_event(SLACK).event == "sync"
        refused = open_stream(server)
        assert_refused(refused, 429)
        refused.close()


# -- subscriptions are released ----------------------------------------------------------------


def test_a_disconnected_admin_stream_releases_its_subscription(
    live_server, private_redis, open_stream
):
    redis_server = private_redis()
    server = start(live_server, REDIS_URL=redis_server.url)
    watcher = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:

        def stats_subscribers() -> int:
            return watcher.pubsub_numsub(TRIGGER_CHANNEL)[0][1]

        assert stats_subscribers() == 0
        stream = open_stream(server, STATS_STREAM)
        next_sync(stream, SLACK)
        servers.eventually(lambda: stats_subscribers() == 1, SLACK, "SUBSCRIBE")
        assert realtime_stats(server)["activeConnections"] == 1

        stream.close()
        servers.eventually(lambda: stats_subscribers() == 0, 2 * HEARTBEAT + SLACK, "UNSUBSCRIBE")
        servers.eventually(
            lambda: realtime_stats(server)["activeConnections"] == 0, SLACK, "stream unregistered"
        )

        assert watcher.pubsub_numpat() == 0
        services = open_stream(server, SERVICES_STREAM)
        assert services.next_event(SLACK).event == "status"
        servers.eventually(lambda: watcher.pubsub_numpat() == 1, SLACK, "PSUBSCRIBE service:*")

        services.close()
        servers.eventually(
            lambda: watcher.pubsub_numpat() == 0, 2 * HEARTBEAT + SLACK, "PUNSUBSCRIBE"
        )
        servers.eventually(
            lambda: realtime_stats(server)["activeConnections"] == 0, SLACK, "stream unregistered"
        )
        assert hub_stats(server)["handlers"] == 0
    finally:
        watcher.close()


# -- service status ----------------------------------------------------------------------------


def test_service_stream_shows_the_reconciler_expiring_a_stuck_order(
    live_server, redis_client, open_stream
):
    expiry = 1
    server = start(
        live_server, RECONCILE_INTERVAL=0.5, ORDER_EXPIRY_SECONDS=expiry, SERVICE_LEASE_TTL=2
    )
    servers.eventually(lambda: redis_client.hlen(STATUS_KEY) == 2, 5, "both services reported")

    stream = open_stream(server, SERVICES_STREAM)
    assert_stream_response(stream)
    first = stream.next_event(SLACK)
    assert first.event == "status" and first.id == "1", first
    services = first.json()["services"]
    assert [s["service"] for s in services] == ["reconciler", "stats-refresher"]
    for entry in services:
        assert {"service", "status", "detail", "at", "worker"} <= set(entry), entry
        assert entry["status"] == "ok"

    # Orders left processing by earlier tests are expired by the first runs: wait for a
    # run with nothing left, so the next one that expires something expires our order.
    servers.wait_until(
        lambda: next_service(stream, SLACK, "reconciler")["status"]["detail"]["expired"] == 0,
        10,
        message="a reconciler run with nothing to expire",
    )
    order = create(server)
    created = time.monotonic()
    held = gevent.spawn(wait, server, order, 15_000, 1)
    gevent.sleep(expiry * 0.6)
    assert not held.ready(), "expired before it was stuck for ORDER_EXPIRY_SECONDS"

    while True:
        report = next_service(stream, expiry + 1.0 + SLACK, "reconciler")
        entry = report["status"]
        assert report["service"] == "reconciler" and entry["service"] == "reconciler"
        assert entry["status"] == "ok"
        assert entry["detail"]["olderThanSeconds"] == expiry
        if entry["detail"]["expired"]:
            break
        assert time.monotonic() - created < expiry + 1.0 + SLACK, "order never expired"
    assert entry["detail"]["expired"] == 1, entry

    answer = held.get(timeout=SLACK)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["orderId"] == order["orderId"]
    assert body["changed"] is True
    assert body["paymentStatus"] == "expired" and body["status"] == "expired"


def test_background_services_run_on_one_worker_of_the_deployment(
    live_server, redis_client, open_stream
):
    settings = {"RECONCILE_INTERVAL": 0.5, "SERVICE_LEASE_TTL": 2}
    first = start(live_server, **settings)
    second = start(live_server, **settings)
    first_worker = realtime_stats(first)["worker"]
    second_worker = realtime_stats(second)["worker"]
    assert first_worker != second_worker

    stream = open_stream(second, SERVICES_STREAM)
    statuses = {s["service"]: s for s in stream.next_event(SLACK).json()["services"]}
    assert statuses["reconciler"]["worker"] == first_worker  # it started first: it leads

    frames = [f for f in stream.frames_for(3.0) if f.is_event]
    reports = [f.json()["status"] for f in frames if f.json()["service"] == "reconciler"]
    assert len(reports) >= 3, reports  # every 0.5 s
    assert {r["worker"] for r in reports} == {first_worker}, reports

    # The leader goes: the other takes over once the lease expires, and only it reports.
    stop_server(first)
    stopped = time.monotonic()
    while True:
        entry = next_service(stream, 2 + 1.0 + SLACK, "reconciler")["status"]
        if entry["worker"] == second_worker:
            break
        assert entry["worker"] == first_worker
    assert time.monotonic() - stopped < 2 + 1.0 + SLACK
    frames = [f for f in stream.frames_for(2.0) if f.is_event]
    workers = {f.json()["status"]["worker"] for f in frames}
    assert workers == {second_worker}, frames


# -- realtime counts ---------------------------------------------------------------------------


def test_realtime_stats_count_connections_here_and_across_workers(
    live_server, redis_client, open_stream
):
    first, second = start(live_server), start(live_server)
    order_a, order_b = create(first), create(second)
    waits = [gevent.spawn(wait, first, order_a), gevent.spawn(wait, second, order_b)]
    try:
        stats_stream = open_stream(first, STATS_STREAM)
        services_stream = open_stream(second, SERVICES_STREAM, token=OTHER_ADMIN)
        next_sync(stats_stream, SLACK)
        services_stream.next_event(SLACK)
        servers.eventually(lambda: parked(first) == 1 and parked(second) == 1, 5, "waits held")

        body = realtime_stats(first)
        assert body["activeConnections"] == 2, body
        connections = sorted(body["connections"], key=lambda c: c["kind"])
        assert [c["kind"] for c in connections] == ["sse:stats", "wait"], connections
        for entry in connections:
            assert set(entry) == {"kind", "key", "since", "lastStatus"}, entry
            assert 0 <= time.time() - entry["since"] < 30
        stats_entry, wait_entry = connections
        assert stats_entry["key"] == "admin:stats"
        assert stats_entry["lastStatus"] == "pubsub"
        assert wait_entry["key"] == order_a["orderId"]
        assert body["byKind"] == {"sse:stats": 1, "wait": 1}

        hub = body["redis"]
        assert hub["connected"] is True
        assert hub["channels"] == 2  # the order's channel and the stats trigger
        # The stats feed, and the parking lot's handler for the parked wait's channel.
        assert hub["handlers"] == 2

        other = realtime_stats(second)
        assert other["activeConnections"] == 2
        assert sorted(c["kind"] for c in other["connections"]) == ["sse:services", "wait"]
        assert other["redis"]["patterns"] == 1

        def totals_of_both() -> dict | None:
            totals = realtime_stats(first)["totals"]
            wanted = {"workers": 2, "waiters": 2, "streams": 2}
            return totals if all(totals.get(k) == v for k, v in wanted.items()) else None

        servers.eventually(totals_of_both, 5, "totals of both servers (presence)")
    finally:
        gevent.killall(waits, timeout=5)


# -- the refresh route -------------------------------------------------------------------------


def test_refresh_recomputes_caches_and_publishes(live_server, redis_client, open_stream):
    ttl = 30
    server = start(live_server, STATS_CACHE_TTL=ttl)
    servers.eventually(lambda: refresher_ran(redis_client), 5, "the refresher's first run")
    stream = open_stream(server)
    next_sync(stream, SLACK)
    before = computations(redis_client)

    response = admin_request(server, "POST", "/api/admin/stats/refresh")
    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert STATS_FIELDS <= set(refreshed), refreshed
    assert refreshed["computations"] == before + 1

    assert 0 < redis_client.ttl(CACHE_KEY) <= ttl
    cached = json.loads(redis_client.get(CACHE_KEY))
    assert cached["stats"]["computations"] == refreshed["computations"]
    assert cached["stats"]["generatedAt"] == refreshed["generatedAt"]

    frame, synced = next_sync(stream, SLACK)
    assert frame.id == "2"
    assert synced["mode"] == "pubsub"
    assert synced["computations"] >= refreshed["computations"]


def test_a_refresh_is_computed_once_even_with_streams_open(live_server, redis_client, open_stream):
    """The refresh route computes, caches, then announces: the open streams must be sent
    that result, not compute the statistics all over again."""
    server = start(live_server, STATS_CACHE_TTL=600)
    servers.eventually(lambda: refresher_ran(redis_client), 5, "the refresher's first run")
    stream = open_stream(server)
    next_sync(stream, SLACK)
    before = computations(redis_client)

    response = admin_request(server, "POST", "/api/admin/stats/refresh")
    assert response.status_code == 200, response.text
    refreshed = response.json()
    _, synced = next_sync(stream, SLACK)
    gevent.sleep(0.5)
    assert synced["computations"] == refreshed["computations"] == before + 1, (refreshed, synced)
    assert synced["generatedAt"] == refreshed["generatedAt"]
    assert computations(redis_client) == before + 1


def test_a_stats_stream_opened_while_the_database_is_down_is_a_503_that_frees_its_slot(
    live_server, redis_client, open_stream, pg_url, db_proxy
):
    """The first statistics are read before the stream starts: with the database down and
    nothing cached, the answer is the JSON 503 with Retry-After (not a stream that breaks
    before its first event), and the refused stream's slot is free again at once."""
    proxied_url = normalize_database_url(pg_url).replace(":5432/", f":{db_proxy.port}/")
    server = start(live_server, DATABASE_URL=proxied_url)
    db_proxy.stop()
    redis_client.delete(CACHE_KEY)
    for _attempt in range(4):  # one more than the token's slots: each 503 gave its slot back
        stream = open_stream(server)
        assert_refused(stream, 503)
        assert stream.response.headers["Retry-After"]
    db_proxy.start()
    servers.eventually(
        lambda: open_stream(server).is_stream, 10, "a stream once the database is back"
    )
