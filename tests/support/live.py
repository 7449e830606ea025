"""Requests to a live server, shared by the tests that start one."""

import requests

from app.payments.signature import sign
from tests.support.helpers import WEBHOOK_SECRET, callback_body, order_body


def create(server) -> dict:
    response = requests.post(server.url + "/api/orders", json=order_body(), timeout=5)
    assert response.status_code == 201, response.text
    return response.json()


def wait(server, order: dict, timeout_ms: int = 20_000, since: int = 1) -> requests.Response:
    return requests.get(
        f"{server.url}/api/orders/{order['orderId']}/wait",
        params={"timeout": timeout_ms, "since": since},
        headers={"Authorization": f"Bearer {order['accessToken']}"},
        timeout=timeout_ms / 1000 + 10,
    )


def parked(server) -> int:
    """Waits the server's worker holds blocked on its hub, past their first reads."""
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]["parked"]


def pay(server, order: dict, **kwargs) -> requests.Response:
    body = callback_body(order["orderNumber"], **kwargs)
    headers = {
        "X-Webhook-Signature": sign(body, WEBHOOK_SECRET),
        "Content-Type": "application/json",
    }
    return requests.post(
        server.url + "/api/payhero/callback", data=body, headers=headers, timeout=10
    )


def hub_stats(server) -> dict:
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]


def assert_stream_response(stream) -> None:
    """An open SSE stream: 200, text/event-stream, not cached."""
    assert stream.response.status_code == 200, stream.response.text
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.response.headers["Cache-Control"] == "no-cache"
