"""Abuse limits and secrets in logs, on live gunicorn servers: the order rate limit shared
by workers, and what a worker's log never contains."""

import requests

from tests.support.helpers import order_body
from tests.support.live import create


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
