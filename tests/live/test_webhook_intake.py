"""Bodies as clients stream them, through a real gunicorn: chunked (Transfer-Encoding:
chunked, no Content-Length), which the Flask test client cannot send. Both the webhook and
order creation count such a body against MAX_BODY_BYTES as it arrives."""

import hashlib
import http.client
import json

import psycopg2
import pytest
import requests

from app.payments.signature import sign
from tests.support.helpers import WEBHOOK_SECRET, callback_body, order_body
from tests.support.live import create

LIMIT = 4096  # these servers' MAX_BODY_BYTES: small, so a body over it is quick to send
CALLBACK = "/api/payhero/callback"


@pytest.fixture
def server(live_server):
    return live_server(MAX_BODY_BYTES=LIMIT)


def pieces(body: bytes, size: int = 1000) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def post_chunked(server, path: str, body: bytes, headers: dict, *, finish: bool = True):
    """POST `body` in chunks of 1000 bytes; (status, JSON answer). Without `finish` the last
    chunk is never sent: only an answer that does not wait for the body's end arrives."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("POST", path)
        for name, value in {"Transfer-Encoding": "chunked", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        for piece in pieces(body):
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        if finish:
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def query(pg_url: str, sql: str, *args) -> list[tuple]:
    with psycopg2.connect(pg_url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    connection.close()
    return rows


def last_event_id(pg_url: str) -> int:
    return query(pg_url, "SELECT coalesce(max(id), 0) FROM payment_events")[0][0]


def order_count(pg_url: str) -> int:
    return query(pg_url, "SELECT count(*) FROM orders")[0][0]


def version(server, order: dict) -> int:
    headers = {"Authorization": f"Bearer {order['accessToken']}"}
    answer = requests.get(f"{server.url}/api/orders/{order['orderId']}", headers=headers, timeout=5)
    return answer.json()["version"]


def oversized_callback(order: dict) -> bytes:
    return callback_body(order["orderNumber"], Padding="x" * LIMIT)


def test_a_signed_chunked_callback_without_content_type_is_accepted(server):
    order = create(server)
    body = callback_body(order["orderNumber"])
    signature = {"X-Webhook-Signature": sign(body, WEBHOOK_SECRET)}

    status, answer = post_chunked(server, CALLBACK, body, signature)

    assert status == 200, answer
    assert answer["paymentStatus"] == "completed" and answer["version"] == 2


def test_a_signed_chunked_callback_over_the_limit_is_413_and_audited(server, pg_url):
    order = create(server)
    body = oversized_callback(order)
    before = last_event_id(pg_url)

    status, answer = post_chunked(
        server, CALLBACK, body, {"X-Webhook-Signature": sign(body, WEBHOOK_SECRET)}
    )

    assert status == 413, answer
    assert answer["success"] is False
    events = query(
        pg_url,
        "SELECT outcome, reason, body_sha256 FROM payment_events WHERE id > %s",
        before,
    )
    # What was read is exactly the first LIMIT + 1 bytes: the audited hash says so.
    read = hashlib.sha256(body[: LIMIT + 1]).hexdigest()
    reason = f"body too large: over {LIMIT} bytes; body_sha256 is of its first {LIMIT + 1}"
    assert events == [("rejected", reason, read)]
    assert version(server, order) == 1


def test_a_chunked_order_over_the_limit_is_413_and_creates_nothing(server, pg_url):
    body = json.dumps({**order_body(), "padding": "x" * LIMIT}).encode()
    before = order_count(pg_url)

    status, answer = post_chunked(server, "/api/orders", body, {"Content-Type": "application/json"})

    assert status == 413, answer
    assert answer["success"] is False
    assert order_count(pg_url) == before


def test_a_chunked_order_within_the_limit_is_created(server):
    body = json.dumps(order_body()).encode()

    status, answer = post_chunked(server, "/api/orders", body, {"Content-Type": "application/json"})

    assert status == 201, answer
    assert answer["version"] == 1


@pytest.mark.parametrize("path", [CALLBACK, "/api/orders"])
def test_the_413_comes_before_the_end_of_a_chunked_body(server, path):
    """Read no further than one byte past the limit: the answer comes while the client is
    still sending (a read to the end would wait here until the client's timeout)."""
    body = b'{"padding": "' + b"x" * (2 * LIMIT)
    headers = {"Content-Type": "application/json", "X-Webhook-Signature": "sha256=00"}

    status, answer = post_chunked(server, path, body, headers, finish=False)

    assert status == 413, answer
