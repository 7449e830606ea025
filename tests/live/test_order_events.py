"""GET /api/orders/<id>/events: the order's Server-Sent Events, on a real gunicorn gevent server.

Every stream is read by a greenlet of its own that parses frames into a queue, so each read a
test makes is bounded by a timeout; the streams a test opens are closed when it ends.
"""

import time

import pytest
import requests

from app.orders import events
from tests.support import servers
from tests.support.helpers import assert_json_error
from tests.support.live import assert_stream_response, create, hub_stats, pay
from tests.support.sse import CLOSED, SseStream

HEARTBEAT = 0.5  # SSE_HEARTBEAT_INTERVAL of the servers below, in seconds
SLACK = 2.0  # scheduling, gunicorn and loopback, generously
POLL_INTERVAL = 0.3  # FALLBACK_DB_POLL_INTERVAL for the Redis-down test


@pytest.fixture
def open_stream():
    """Open SSE streams on an order; all of them are closed after the test."""
    opened: list[SseStream] = []

    def open_(server, order: dict, *, headers=None, params=None, token=None) -> SseStream:
        token = token or order["accessToken"]
        stream = SseStream(
            events_url(server, order["orderId"]),
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            params=params,
        )
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.close()


def events_url(server, order_id: str) -> str:
    return f"{server.url}/api/orders/{order_id}/events"


def start(live_server, **env):
    return live_server(SSE_HEARTBEAT_INTERVAL=HEARTBEAT, **env)


def assert_status_event(frame, version: int, payment_status: str, order: dict) -> dict:
    assert frame is not CLOSED, f"stream closed, expected event id {version}"
    assert frame.event == "order_status", frame
    assert frame.id == str(version), frame
    body = frame.json()
    assert body["orderId"] == order["orderId"]
    assert body["version"] == version
    assert body["paymentStatus"] == payment_status
    return body


def test_an_event_published_before_connecting_is_delivered_then_the_stream_ends(
    live_server, redis_client, open_stream
):
    server = start(live_server)
    order = create(server)
    assert pay(server, order).status_code == 200

    stream = open_stream(server, order)
    assert_stream_response(stream)
    first = stream.next_event(SLACK)
    body = assert_status_event(first, 2, "completed", order)
    assert body["status"] == "paid"

    # Terminal: the server ends the stream (no heartbeats held open for a settled order).
    assert stream.rest(SLACK) == []


def test_a_pending_order_streams_its_state_heartbeats_then_the_payment(
    live_server, redis_client, open_stream
):
    server = start(live_server)
    order = create(server)
    stream = open_stream(server, order)
    assert_stream_response(stream)

    first = stream.next(SLACK)
    assert_status_event(first, 1, "processing", order)

    started = time.monotonic()
    heartbeat = stream.next(HEARTBEAT + SLACK)
    assert heartbeat is not CLOSED and heartbeat.is_heartbeat, heartbeat
    assert time.monotonic() - started >= HEARTBEAT * 0.5  # a heartbeat, not a burst

    assert pay(server, order).status_code == 200
    paid = stream.next_event(SLACK)
    assert_status_event(paid, 2, "completed", order)
    assert [f for f in stream.rest(SLACK) if f.is_event] == []


@pytest.mark.parametrize("how", ["header", "query"])
def test_replay_from_last_event_id_sends_only_newer_events(
    live_server, redis_client, open_stream, how
):
    server = start(live_server)
    order = create(server)
    assert pay(server, order).status_code == 200

    if how == "header":
        stream = open_stream(server, order, headers={"Last-Event-ID": "1"})
    else:
        stream = open_stream(server, order, params={"lastEventId": "1"})
    assert_stream_response(stream)
    assert_status_event(stream.next_event(SLACK), 2, "completed", order)
    assert [f for f in stream.rest(SLACK) if f.is_event] == []


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnecting_to_a_pending_order_does_not_resend_the_state_already_seen(
    live_server, redis_client, open_stream, how
):
    server = start(live_server)
    order = create(server)

    if how == "header":
        stream = open_stream(server, order, headers={"Last-Event-ID": "1"})
    else:
        stream = open_stream(server, order, params={"lastEventId": "1"})
    assert_stream_response(stream)
    # Version 1 was seen already: only heartbeats until something newer happens.
    first = stream.next(HEARTBEAT + SLACK)
    assert first is not CLOSED and first.is_heartbeat, first

    assert pay(server, order).status_code == 200
    assert_status_event(stream.next_event(SLACK), 2, "completed", order)
    assert [f for f in stream.rest(SLACK) if f.is_event] == []


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnecting_after_the_terminal_event_gets_nothing_and_is_not_held_open(
    live_server, redis_client, open_stream, how
):
    """An EventSource reconnects with the id of the last event it saw. A settled order has
    nothing newer and never will: the server answers 204 No Content, the one answer that
    makes an EventSource stop reconnecting."""
    server = start(live_server)
    order = create(server)
    assert pay(server, order).status_code == 200

    if how == "header":
        stream = open_stream(server, order, headers={"Last-Event-ID": "2"})
    else:
        stream = open_stream(server, order, params={"lastEventId": "2"})
    assert stream.response.status_code == 204, stream.response.text
    assert stream.response.content == b""
    # No content type: SSE clients refuse a 204 that says text/html.
    assert "Content-Type" not in stream.response.headers
    assert hub_stats(server)["waiters"] == 0


def test_live_events_arrive_in_order_and_once_across_the_replay_boundary(
    live_server, redis_client, open_stream
):
    server = start(live_server)
    order = create(server)
    stream = open_stream(server, order)
    first = stream.next_event(SLACK)
    assert_status_event(first, 1, "processing", order)

    # A second delivery of a version already sent (as the hub's re-read after a reconnect
    # makes) must not be sent again.
    channel = events.channel(order["orderId"])
    assert redis_client.publish(channel, first.data) == 1

    assert pay(server, order).status_code == 200
    # Redelivered again, after the payment, and the payment itself once more.
    paid = stream.next_event(SLACK)
    assert_status_event(paid, 2, "completed", order)
    redis_client.publish(channel, first.data)
    redis_client.publish(channel, paid.data)

    received = [first, paid] + [f for f in stream.rest(SLACK) if f.is_event]
    assert [e.id for e in received] == ["1", "2"]
    assert [e.json()["paymentStatus"] for e in received] == ["processing", "completed"]


def test_errors_are_plain_json_not_streams(live_server, redis_client):
    server = start(live_server)
    order = create(server)
    other = create(server)
    url = events_url(server, order["orderId"])

    def get(url, headers=None, params=None) -> requests.Response:
        return requests.get(url, headers=headers, params=params, timeout=5)

    bearer = {"Authorization": f"Bearer {order['accessToken']}"}
    assert_json_error(get(url), 401)
    assert_json_error(get(url, headers={"Authorization": f"Bearer {other['accessToken']}"}), 404)
    assert_json_error(get(url, params={"token": "not-the-token"}), 404)
    unknown = events_url(server, "3f1c1e0e-8a3b-4b0f-9d6e-2b7c9a1d4e5f")
    assert_json_error(get(unknown, headers=bearer), 404)
    assert_json_error(get(events_url(server, "not-a-uuid"), headers=bearer), 404)
    assert_json_error(get(url, headers={**bearer, "Last-Event-ID": "abc"}), 400)
    assert_json_error(get(url, headers={"Last-Event-ID": "abc"}), 401)  # the token comes first
    assert_json_error(get(url, headers=bearer, params={"lastEventId": "abc"}), 400)

    # Wrong and missing tokens leave no subscription behind.
    assert hub_stats(server)["waiters"] == 0
    assert redis_client.pubsub_numsub(events.channel(order["orderId"]))[0][1] == 0


def test_a_disconnected_client_releases_its_subscription(live_server, redis_client, open_stream):
    server = start(live_server)
    order = create(server)
    channel = events.channel(order["orderId"])

    def subscribers() -> int:
        return redis_client.pubsub_numsub(channel)[0][1]

    stream = open_stream(server, order)
    assert_status_event(stream.next_event(SLACK), 1, "processing", order)
    assert subscribers() == 1
    assert hub_stats(server)["waiters"] == 1

    stream.close()
    # The server learns of the departure when a heartbeat write fails: the first write after
    # the close may still land in the kernel's buffer, the next one cannot.
    servers.eventually(lambda: subscribers() == 0, 2 * HEARTBEAT + SLACK, "UNSUBSCRIBE")
    servers.eventually(lambda: hub_stats(server)["waiters"] == 0, SLACK, "hub waiters at 0")
    assert hub_stats(server)["channels"] == 0


def test_with_redis_down_an_open_stream_gets_the_payment_by_database_polling(
    live_server, private_redis, open_stream
):
    redis_server = private_redis()
    server = start(live_server, REDIS_URL=redis_server.url, FALLBACK_DB_POLL_INTERVAL=POLL_INTERVAL)
    order = create(server)
    stream = open_stream(server, order)
    assert_status_event(stream.next_event(SLACK), 1, "processing", order)

    redis_server.stop()
    servers.eventually(lambda: not hub_stats(server)["connected"], 5, "hub on database polling")

    assert pay(server, order).status_code == 200  # the database is the truth
    paid_at = time.monotonic()
    paid = stream.next_event(POLL_INTERVAL + SLACK)
    delay = time.monotonic() - paid_at
    assert_status_event(paid, 2, "completed", order)
    assert delay < POLL_INTERVAL + SLACK
    assert [f for f in stream.rest(SLACK) if f.is_event] == []
    assert hub_stats(server)["fallbackPolls"] > 0


def test_a_last_event_id_beyond_the_orders_history_is_ignored(live_server, open_stream):
    """An id this order never had (a mix-up on the client) must not hide its real events."""
    server = start(live_server)
    order = create(server)
    assert pay(server, order).status_code == 200
    stream = open_stream(server, order, headers={"Last-Event-ID": "99"})
    assert stream.response.status_code == 200
    events = [f for f in stream.rest(HEARTBEAT * 2 + SLACK) if f.is_event]
    assert [f.id for f in events] == ["2"]
