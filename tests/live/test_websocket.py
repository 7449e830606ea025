"""`GET /api/orders/<id>/ws` on a real gunicorn gevent server, with a real WebSocket client
(simple-websocket): replay on connect, live events in order, reconnect with lastEventId,
close codes, refusal before the upgrade, release of the subscription, Redis down."""

import base64
import json
import os
import re
import socket
import time

import gevent
import pytest
import redis
import requests
from simple_websocket import Client as SimpleClient
from simple_websocket import ConnectionClosed
from simple_websocket import ConnectionError as HandshakeRefused

from app.orders import events
from tests.conftest import REDIS_URL
from tests.support import servers
from tests.support.live import create, pay

ADMIN = "admin-ws"


class Client(SimpleClient):
    """simple-websocket's client reads only the handshake's own event: frames that came in
    the same read (the server sends the current state at once) would wait in wsproto's
    buffer for the next frame. Take them now."""

    def handshake(self):
        super().handshake()
        self._handle_events()


def ws_url(server, order: dict, token: str | None = None, last_event_id=None) -> str:
    url = server.url.replace("http://", "ws://") + f"/api/orders/{order['orderId']}/ws"
    query = {"token": token if token is not None else order["accessToken"]}
    if last_event_id is not None:
        query["lastEventId"] = last_event_id
    return url + "?" + "&".join(f"{k}={v}" for k, v in query.items() if v != "")


def connect(server, order: dict, **kwargs) -> Client:
    return Client.connect(ws_url(server, order, **kwargs))


def messages_until_close(client: Client, timeout: float = 10) -> tuple[list[dict], int]:
    """Every message until the server closes, and the close code."""
    received = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = client.receive(max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as closed:
            return received, closed.reason
        assert data is not None, f"no close within {timeout}s, got {received}"
        received.append(json.loads(data))


def close(client: Client) -> None:
    try:
        client.close()
    except ConnectionClosed:
        pass  # the server closed it already


def next_message(client: Client, timeout: float = 5) -> dict:
    data = client.receive(timeout)
    assert data is not None, "no message"
    return json.loads(data)


def subscribers(order: dict) -> int:
    channel = events.channel(order["orderId"])
    return redis.Redis.from_url(REDIS_URL).pubsub_numsub(channel)[0][1]


def socket_count(server) -> int:
    stats = requests.get(
        server.url + "/api/realtime/stats", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
    ).json()
    return sum(1 for c in stats["connections"] if c["kind"] == "ws")


@pytest.fixture
def server(live_server):
    return live_server(ADMIN_TOKENS=ADMIN)


def test_current_state_on_connect_then_live_event_then_close_1000(server, redis_client):
    order = create(server)
    client = connect(server, order)
    try:
        first = next_message(client)
        assert first["type"] == "order_status" and first["id"] == 1
        assert first["payload"]["orderId"] == order["orderId"]
        assert first["payload"]["paymentStatus"] == "processing"
        assert "accessToken" not in first["payload"]

        assert pay(server, order).status_code == 200
        rest, code = messages_until_close(client)
        assert [(m["id"], m["payload"]["paymentStatus"]) for m in rest] == [(2, "completed")]
        assert code == 1000
    finally:
        close(client)


def test_event_published_before_connecting_is_received_on_connect(server):
    order = create(server)
    assert pay(server, order).status_code == 200
    client = connect(server, order)
    received, code = messages_until_close(client)
    assert [(m["id"], m["payload"]["status"]) for m in received] == [(2, "paid")]
    assert code == 1000


def test_live_events_arrive_in_order_each_once(server, redis_client):
    order = create(server)
    client = connect(server, order)
    try:
        assert next_message(client)["id"] == 1
        assert subscribers(order) == 1
        state = requests.get(
            f"{server.url}/api/orders/{order['orderId']}",
            headers={"Authorization": f"Bearer {order['accessToken']}"},
            timeout=5,
        ).json()
        channel = events.channel(order["orderId"])
        # Events as the hub receives them: a repeat and a stale one are not sent again.
        sent = [(2, "processing"), (2, "processing"), (1, "processing"), (3, "processing")]
        for version, status in [*sent, (4, "completed")]:
            event = {**state, "version": version, "paymentStatus": status}
            redis_client.publish(channel, json.dumps(event))
        rest, code = messages_until_close(client)
        assert [m["id"] for m in rest] == [2, 3, 4]
        assert code == 1000
    finally:
        close(client)


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(server):
    order = create(server)
    client = connect(server, order)
    assert next_message(client)["id"] == 1
    close(client)
    servers.eventually(lambda: subscribers(order) == 0, 5, "the first socket released")

    assert pay(server, order).status_code == 200  # missed while away
    client = connect(server, order, last_event_id=1)
    received, code = messages_until_close(client)
    assert [m["id"] for m in received] == [2]
    assert code == 1000

    client = connect(server, order, last_event_id=2)  # has it all: closed at once
    assert messages_until_close(client) == ([], 1000)


def upgrade_headers() -> dict:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }


def test_bad_or_missing_token_is_refused_before_the_upgrade(server):
    order = create(server)
    url = f"{server.url}/api/orders/{order['orderId']}/ws"
    cases = [
        (url, 401),  # no token
        (url + "?token=wrong", 404),
        (f"{server.url}/api/orders/{order['orderId'][:-1]}0/ws?token=x", 404),
        (f"{server.url}/api/orders/not-an-id/ws?token=x", 404),
    ]
    for target, status in cases:
        response = requests.get(target, headers=upgrade_headers(), timeout=5)
        assert response.status_code == status, (target, response.status_code)
        assert response.json()["success"] is False
    with pytest.raises(HandshakeRefused):
        connect(server, order, token="wrong")
    # The Authorization header works too (for clients that can set it).
    client = Client.connect(
        ws_url(server, order, token=""),
        headers={"Authorization": f"Bearer {order['accessToken']}"},
    )
    assert next_message(client)["id"] == 1
    close(client)


def test_a_client_that_leaves_is_unregistered_at_once(server):
    order = create(server)
    clients = [connect(server, order) for _ in range(2)]
    for client in clients:
        assert next_message(client)["id"] == 1
    assert subscribers(order) == 1  # one subscription per worker, shared
    assert socket_count(server) == 2

    close(clients[0])  # a clean close
    servers.eventually(lambda: socket_count(server) == 1, 1.0, "the first socket gone")
    assert subscribers(order) == 1

    clients[1].sock.shutdown(socket.SHUT_RDWR)  # gone without a close frame
    started = time.monotonic()
    servers.eventually(lambda: subscribers(order) == 0, 1.0, "the subscription released")
    assert time.monotonic() - started < 1.0
    assert socket_count(server) == 0


def test_a_peer_that_stops_answering_pings_is_closed(live_server):
    server = live_server(ADMIN_TOKENS=ADMIN, SSE_HEARTBEAT_INTERVAL=0.5)
    order = create(server)
    # A raw handshake, then silence: the pings are never answered.
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    request = (
        f"GET /api/orders/{order['orderId']}/ws?token={order['accessToken']} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in upgrade_headers().items())
        + "\r\n"
    )
    raw.sendall(request.encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 101")
    try:
        servers.eventually(lambda: subscribers(order) == 1, 2, "subscribed")
        servers.eventually(lambda: subscribers(order) == 0, 3, "closed after a missed pong")
    finally:
        raw.close()


def test_redis_down_the_socket_is_fed_by_the_database_poll(live_server, private_redis):
    redis_server = private_redis()
    env = {"REDIS_URL": redis_server.url, "FALLBACK_DB_POLL_INTERVAL": 0.5}
    server, other = live_server(**env), live_server(**env)
    order = create(server)
    client = connect(server, order)
    try:
        assert next_message(client)["id"] == 1
        redis_server.stop()
        servers.eventually(
            lambda: not requests.get(server.url + "/readyz", timeout=5).json()["hub"]["connected"],
            10,
            "the hub on database polling",
        )
        paid_at = time.monotonic()
        assert pay(other, order).status_code == 200  # another instance: only the poll tells
        received, code = messages_until_close(client, timeout=5)
        assert [(m["id"], m["payload"]["paymentStatus"]) for m in received] == [(2, "completed")]
        assert time.monotonic() - paid_at < 0.5 + 1.5
        assert code == 1000
    finally:
        close(client)


def test_shutdown_closes_sockets_with_1001_and_metrics_count_them(server):
    order = create(server)
    client = connect(server, order)
    assert next_message(client)["id"] == 1
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'orderwait_streams_open{kind="ws"} 1.0' in metrics
    exited = gevent.spawn(server.terminate)
    with pytest.raises(ConnectionClosed) as closed:
        assert client.receive(5) is None, "a message instead of the close"
    assert closed.value.reason == 1001
    # When to come back, drawn over SHUTDOWN_RECONNECT_WINDOW_MS (2,000 unless set).
    delay = re.fullmatch(r"going away; retry in (\d+) ms", closed.value.message)
    assert delay and 0 <= int(delay[1]) <= 2000, closed.value.message
    assert exited.get(timeout=30) < 10


def test_the_readme_python_client_follows_an_order_to_its_end(server):
    readme = (servers.ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1]
    namespace: dict = {}
    exec(code.split("```", 1)[0], namespace)  # the example exactly as documented
    order = create(server)
    seen = []
    follower = gevent.spawn(
        namespace["follow_order"],
        server.url.replace("http://", "ws://"),
        order["orderId"],
        order["accessToken"],
        seen.append,
    )
    servers.eventually(lambda: len(seen) == 1, 5, "the current state")
    assert pay(server, order).status_code == 200
    follower.get(timeout=10)  # returned: closed with 1000 after the terminal event
    assert [(s["version"], s["paymentStatus"]) for s in seen] == [
        (1, "processing"),
        (2, "completed"),
    ]
