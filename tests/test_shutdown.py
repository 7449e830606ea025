"""Graceful shutdown: SIGTERM answers held waits and ends streams at once, then the worker
exits well inside graceful_timeout. A live gunicorn server; no client gets a reset."""

import time

import gevent
import redis

from tests import servers
from tests.conftest import REDIS_URL
from tests.sse import SseStream
from tests.test_live import create, parked, wait

ADMIN = "admin-shutdown"


def test_sigterm_answers_held_waits_and_ends_streams(live_server, redis_client):
    server = live_server(ADMIN_TOKENS=ADMIN, SSE_HEARTBEAT_INTERVAL=1)
    orders = [create(server) for _ in range(5)]
    waits = [gevent.spawn(wait, server, order, timeout_ms=20_000) for order in orders]
    servers.eventually(lambda: parked(server) == 5, 10, "five waits held")
    streamed = create(server)
    order_stream = SseStream(
        f"{server.url}/api/orders/{streamed['orderId']}/events",
        headers={"Authorization": f"Bearer {streamed['accessToken']}"},
    )
    stats_stream = SseStream(
        f"{server.url}/api/admin/stats/stream", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    try:
        assert order_stream.next_event(5).id == "1"
        assert stats_stream.next_event(5).event == "sync"
        leases = redis.Redis.from_url(REDIS_URL).keys("service:leader:*")
        assert leases, "the background services hold their leases"

        terminated_at = time.monotonic()
        exited_in = gevent.spawn(server.terminate)
        answers = [w.get(timeout=5) for w in waits]
        answered_in = time.monotonic() - terminated_at
        for order, answer in zip(orders, answers, strict=True):
            assert answer.status_code == 200
            body = answer.json()
            assert body["orderId"] == order["orderId"]
            assert body["changed"] is False and body["source"] == "shutdown"
        assert answered_in < 3.0

        # Both streams end cleanly (no error): EventSource reconnects elsewhere.
        assert [f for f in order_stream.rest(5) if f.is_event] == []
        assert order_stream.error is None
        assert [f for f in stats_stream.rest(5) if f.is_event] == []
        assert stats_stream.error is None

        assert exited_in.get(timeout=30) < 10.0  # graceful_timeout is 30 s
        assert redis.Redis.from_url(REDIS_URL).keys("service:leader:*") == []
    finally:
        order_stream.close()
        stats_stream.close()
