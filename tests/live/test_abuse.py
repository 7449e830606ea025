"""Abuse limits and secrets in logs, on live gunicorn servers: the order rate limit shared
by workers, and what a worker's log never contains."""

import json
import socket

import requests

from tests.support.helpers import order_body
from tests.support.live import create, pay


def test_order_rate_limit_holds_across_workers(live_server):
    settings = {"ORDER_CREATE_RATE_LIMIT": "3 per minute"}
    first, second = live_server(**settings), live_server(**settings)

    def post(server):
        return requests.post(server.url + "/api/orders", json=order_body(), timeout=5)

    assert [post(s).status_code for s in (first, first, second)] == [201, 201, 201]
    assert post(second).status_code == 429
    assert post(first).status_code == 429


def test_live_gunicorn_logs_no_token_or_email(live_server):
    server = live_server()
    order = create(server)
    requests.get(
        f"{server.url}/api/orders/{order['orderId']}",
        headers={"Authorization": f"Bearer {order['accessToken']}"},
        timeout=5,
    )
    output = server.output()
    assert order["accessToken"] not in output and order["customer"]["email"] not in output


def test_requests_gunicorn_refuses_get_the_json_error(live_server):
    """Over-long request lines and headers, and malformed requests, never reach the
    application: gunicorn answers them, with its status and the API's JSON error."""
    server = live_server()
    long_path = f"/api/orders/{'x' * 9000}/wait"
    assert_json_error(requests.get(server.url + long_path, timeout=5), 414, "exceeds limit")
    too_many = {f"X-Filler-{n}": "y" for n in range(120)}
    assert_json_error(requests.get(server.url + "/healthz", headers=too_many, timeout=5), 431)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/json" in head
    assert json.loads(body)["success"] is False


def assert_json_error(response, status: int, says: str = "") -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False and says in body["error"]


def test_logs_of_a_publish_redis_does_not_confirm_carry_the_order_id_not_the_customer(
    live_server, private_redis
):
    """Redis stops answering while an order is created and settled: the worker's log says
    which order and why, and nothing of its customer."""
    redis_server = private_redis()
    server = live_server(REDIS_URL=redis_server.url, REDIS_SOCKET_TIMEOUT=0.5)
    customer = {"email": "nyokabi.wambui@example.org", "firstName": "Nyokabi", "lastName": "Wambui"}
    phone = "254798765432"
    redis_server.freeze()
    try:
        response = requests.post(
            server.url + "/api/orders",
            json=order_body(customer=customer, phone=phone),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        order = response.json()
        assert pay(server, order).status_code == 200  # the database is the truth
    finally:
        redis_server.thaw()

    output = server.output()
    unconfirmed = [line for line in output.splitlines() if "did not confirm" in line]
    assert len(unconfirmed) == 2, output  # the cached state at creation, the settlement
    assert all(order["orderId"] in line for line in unconfirmed), unconfirmed
    for secret in (*customer.values(), phone, order["accessToken"]):
        assert secret not in output
