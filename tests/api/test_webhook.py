"""POST /api/payhero/callback through the Flask test client, against real PostgreSQL and Redis."""

import hashlib
import json
import logging
import time
from contextlib import contextmanager

import gevent
import pytest
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app.extensions import db
from app.orders import events
from app.orders.models import Order
from app.payments.models import PaymentEvent
from app.payments.signature import sign
from tests.support.helpers import (
    WEBHOOK_SECRET,
    assert_error,
    auth,
    callback_body,
    create_order,
    order_body,
    pay,
    post_callback,
    signature_for,
    statements_run,
)
from tests.support.servers import free_port

CALLBACK = "/api/payhero/callback"
UNKNOWN_REFERENCE = "ORD-0000000000000-NOSUCH"


def stored(app, order_id: str) -> dict:
    """The order as the database holds it (the truth), read in an app context of its own."""
    with app.app_context():
        order = db.session.get(Order, order_id)
        state = {
            "paymentStatus": order.payment_status,
            "status": order.status,
            "version": order.version,
            "failureReason": order.failure_reason,
        }
        db.session.remove()
    return state


def assert_untouched(app, redis_client, order: dict) -> None:
    """Still the freshly created order, and no change of it was published to Redis."""
    state = stored(app, order["orderId"])
    assert state["paymentStatus"] == "processing"
    assert state["status"] == "pending"
    assert state["version"] == 1
    # Creation caches version 1; nothing after it may have replaced it or been buffered.
    cached = redis_client.get(events.latest_key(order["orderId"]))
    assert cached is None or json.loads(cached)["order"]["version"] == 1
    assert not redis_client.exists(events.buffer_key(order["orderId"]))


def buffered(redis_client, order_id: str) -> list[dict]:
    return [json.loads(m) for m in redis_client.lrange(events.buffer_key(order_id), 0, -1)]


@contextmanager
def subscriber(redis_client, order_id: str):
    """A pub/sub connection subscribed to the order's channel, confirmed before it is used."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(events.channel(order_id))
    try:
        confirmation = pubsub.get_message(timeout=2.0)
        assert confirmation is not None and confirmation["type"] == "subscribe"
        yield pubsub
    finally:
        pubsub.close()


def received(pubsub, seconds: float, stop_after: int | None = None) -> list[dict]:
    """The published messages read within `seconds` (at most 100, or `stop_after`)."""
    deadline = time.monotonic() + seconds
    messages = []
    for _ in range(100):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (stop_after is not None and len(messages) >= stop_after):
            break
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
        if message is not None and message["type"] == "message":
            messages.append(json.loads(message["data"]))
    return messages


def without(body: bytes, field: str) -> bytes:
    payload = json.loads(body)
    del payload["response"][field]
    return json.dumps(payload).encode()


# --- the state machine -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result_code", "payment_status", "status"),
    [
        (0, "completed", "paid"),
        (1, "cancelled", "cancelled"),
        (1032, "cancelled", "cancelled"),
        ("1032", "cancelled", "cancelled"),
        (2001, "failed", "failed"),
        (17, "failed", "failed"),
    ],
)
def test_result_code_settles_the_order(app, client, result_code, payment_status, status):
    order = create_order(client)

    response = pay(client, order, result_code=result_code)

    assert response.status_code == 200, response.get_json()
    outcome = response.get_json()
    assert outcome["success"] is True
    assert outcome["orderId"] == order["orderId"]
    assert outcome["paymentStatus"] == payment_status
    assert outcome["status"] == status
    assert outcome["version"] == 2
    assert outcome["changed"] is True
    assert outcome["duplicate"] is False
    current = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert current["paymentStatus"] == payment_status
    assert current["status"] == status
    assert current["version"] == 2
    assert stored(app, order["orderId"])["version"] == 2


@pytest.mark.parametrize(("result_code", "amount"), [(0, 300), (1032, 300), (2001, None)])
def test_a_payment_settles_in_one_statement_without_reading_the_order(
    any_database_app, result_code, amount
):
    """PostgreSQL: the UPDATE and the audit INSERT as one WITH statement, in autocommit (one
    round trip); SQLite: the UPDATE ... RETURNING, the INSERT and a commit."""
    client = any_database_app.test_client()
    order = create_order(client)

    with statements_run(any_database_app) as statements:
        response = pay(client, order, result_code=result_code, amount=amount)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["changed"] is True
    on_postgresql = any_database_app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    assert statements == ([("WITH", True)] if on_postgresql else ["UPDATE", "INSERT", "COMMIT"])
    with any_database_app.app_context():
        mine = PaymentEvent.order_number == order["orderNumber"]
        audit = db.session.execute(db.select(PaymentEvent).where(mine)).scalars().all()
        db.session.remove()
    assert [(e.outcome, e.order_id, e.result_code) for e in audit] == [
        ("accepted", order["orderId"], result_code)
    ]
    assert audit[0].amount == amount and audit[0].received_at is not None
    answer = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert answer["version"] == 2
    assert answer["paymentStatus"] == response.get_json()["paymentStatus"]


def test_a_wrong_amount_fails_the_order_once_on_either_database(any_database_app):
    client = any_database_app.test_client()
    order = create_order(client)
    first, again = pay(client, order, amount=299), pay(client, order, amount=299)
    assert first.get_json()["paymentStatus"] == "failed"
    assert first.get_json()["reason"] == "amount_mismatch"
    assert again.get_json()["duplicate"] is True
    assert again.get_json()["version"] == 2


# --- what the commit leaves in Redis -------------------------------------------------------------


def test_settled_order_is_cached_with_a_bounded_ttl(app, client, redis_client):
    order = create_order(client)

    assert pay(client, order).status_code == 200

    key = events.latest_key(order["orderId"])
    ttl = redis_client.ttl(key)
    assert 0 < ttl <= app.config["ORDER_CACHE_TTL"]
    cached = json.loads(redis_client.get(key))
    assert cached["order"]["orderId"] == order["orderId"]
    assert cached["order"]["paymentStatus"] == "completed"
    assert cached["order"]["status"] == "paid"
    assert cached["order"]["version"] == 2


def test_settled_order_is_buffered_once_with_a_bounded_ttl(app, client, redis_client):
    order = create_order(client)

    assert pay(client, order).status_code == 200

    key = events.buffer_key(order["orderId"])
    assert redis_client.type(key) == "list"
    assert 0 < redis_client.ttl(key) <= app.config["EVENT_BUFFER_TTL"]
    entries = buffered(redis_client, order["orderId"])
    assert len(entries) == 1
    assert entries[0]["orderId"] == order["orderId"]
    assert entries[0]["version"] == 2
    assert entries[0]["paymentStatus"] == "completed"


def test_settled_order_is_published_on_its_channel(client, redis_client):
    order = create_order(client)

    with subscriber(redis_client, order["orderId"]) as pubsub:
        assert pay(client, order).status_code == 200
        messages = received(pubsub, 2.0, stop_after=1)

    assert len(messages) == 1
    assert messages[0]["orderId"] == order["orderId"]
    assert messages[0]["paymentStatus"] == "completed"
    assert messages[0]["version"] == 2


def test_event_buffer_keeps_only_the_newest_event_buffer_max_events(make_app, redis_client):
    # A terminal state is final, so the API settles an order once: one event per order.
    # Announce three versions directly to see the buffer trimmed to EVENT_BUFFER_MAX.
    app = make_app(EVENT_BUFFER_MAX=2)
    client = app.test_client()
    order = create_order(client)
    assert pay(client, order).status_code == 200
    assert len(buffered(redis_client, order["orderId"])) == 1

    with app.app_context():
        row = db.session.get(Order, order["orderId"])
        base, token_hash = row.to_json(), row.access_token_hash
        db.session.remove()
        for version in (3, 4, 5):
            assert events.announce({**base, "version": version}, token_hash) is True

    entries = buffered(redis_client, order["orderId"])
    assert [entry["version"] for entry in entries] == [4, 5]


# --- idempotency -------------------------------------------------------------------------------


def test_duplicate_webhook_changes_nothing(app, client, redis_client):
    order = create_order(client)
    body = callback_body(order["orderNumber"])

    with subscriber(redis_client, order["orderId"]) as pubsub:
        first = post_callback(client, body)
        assert first.status_code == 200
        first_messages = received(pubsub, 2.0, stop_after=1)
        second = post_callback(client, body)
        late_messages = received(pubsub, 0.3)

    assert first.get_json()["changed"] is True
    assert second.status_code == 200
    outcome = second.get_json()
    assert outcome["duplicate"] is True
    assert outcome["changed"] is False
    assert outcome["version"] == 2
    assert outcome["paymentStatus"] == "completed"
    assert stored(app, order["orderId"])["version"] == 2
    assert len(buffered(redis_client, order["orderId"])) == 1
    assert len(first_messages) == 1
    assert late_messages == []


def test_late_different_callback_never_leaves_a_terminal_state(app, client, redis_client):
    order = create_order(client)
    assert pay(client, order).status_code == 200

    response = pay(client, order, result_code=1032)

    assert response.status_code == 200
    outcome = response.get_json()
    assert outcome["changed"] is False
    assert outcome["duplicate"] is False
    assert outcome["paymentStatus"] == "completed"
    assert outcome["version"] == 2
    state = stored(app, order["orderId"])
    assert (state["paymentStatus"], state["status"], state["version"]) == ("completed", "paid", 2)
    assert len(buffered(redis_client, order["orderId"])) == 1


def test_concurrent_duplicate_webhooks_settle_the_order_once(app, client, redis_client):
    order = create_order(client)
    body = callback_body(order["orderNumber"])

    def deliver():
        return post_callback(app.test_client(), body)

    greenlets = [gevent.spawn(deliver) for _ in range(10)]
    gevent.joinall(greenlets, timeout=30)

    assert all(g.ready() for g in greenlets), "a delivery did not finish within 30 s"
    for greenlet in greenlets:
        assert greenlet.successful(), greenlet.exception
    responses = [greenlet.value for greenlet in greenlets]
    assert [r.status_code for r in responses] == [200] * 10
    outcomes = [r.get_json() for r in responses]
    assert sum(o["changed"] is True for o in outcomes) == 1
    assert sum(o["duplicate"] is True for o in outcomes) == 9
    assert all(o["version"] == 2 for o in outcomes)
    assert stored(app, order["orderId"])["version"] == 2
    assert len(buffered(redis_client, order["orderId"])) == 1


# --- amounts -----------------------------------------------------------------------------------


def test_amount_mismatch_never_marks_the_order_paid(app, client, redis_client):
    order = create_order(client, amount=300)

    response = pay(client, order, amount=299)

    assert response.status_code == 200
    assert response.get_json()["paymentStatus"] == "failed"
    current = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert current["paymentStatus"] == "failed"
    assert current["status"] == "failed"
    assert current["failureReason"] == "amount_mismatch"
    assert current["version"] == 2
    assert stored(app, order["orderId"])["paymentStatus"] == "failed"


def test_amount_sent_as_a_float_equal_to_the_total_pays_the_order(app, client):
    order = create_order(client, amount=300)

    response = pay(client, order, amount=300.0)

    assert response.status_code == 200
    state = stored(app, order["orderId"])
    assert (state["paymentStatus"], state["status"], state["version"]) == ("completed", "paid", 2)
    assert state["failureReason"] is None


# --- signatures --------------------------------------------------------------------------------


def test_callback_without_signature_is_rejected(app, client, redis_client):
    order = create_order(client)
    body = callback_body(order["orderNumber"])

    response = client.post(CALLBACK, data=body, content_type="application/json")

    assert_error(response, 401)
    assert_untouched(app, redis_client, order)


def test_callback_signed_with_the_wrong_secret_is_rejected(app, client, redis_client):
    order = create_order(client)

    response = post_callback(client, callback_body(order["orderNumber"]), secret="not-the-secret")

    assert_error(response, 401)
    assert_untouched(app, redis_client, order)


def test_signature_without_sha256_prefix_is_rejected(app, client, redis_client):
    order = create_order(client)
    body = callback_body(order["orderNumber"])
    headers = signature_for(body)
    headers["X-Webhook-Signature"] = headers["X-Webhook-Signature"].removeprefix("sha256=")

    response = client.post(CALLBACK, data=body, headers=headers)

    assert_error(response, 401)
    assert_untouched(app, redis_client, order)


def test_body_altered_after_signing_is_rejected(app, client, redis_client):
    order = create_order(client)
    signed = callback_body(order["orderNumber"], result_code=1032)
    altered = callback_body(order["orderNumber"], result_code=0)

    response = client.post(CALLBACK, data=altered, headers=signature_for(signed))

    assert_error(response, 401)
    assert_untouched(app, redis_client, order)


def test_empty_webhook_secret_accepts_no_callback(make_app, redis_client):
    app = make_app(WEBHOOK_SECRET="")
    client = app.test_client()
    order = create_order(client)

    response = post_callback(client, callback_body(order["orderNumber"]), secret="")

    assert_error(response, 401)
    assert_untouched(app, redis_client, order)


# --- malformed but signed ----------------------------------------------------------------------

MALFORMED = [
    pytest.param(lambda ref: b'{"status": true, "response": ', id="invalid-json"),
    pytest.param(lambda ref: b"\xff\xfe not utf-8", id="not-utf8"),
    pytest.param(lambda ref: json.dumps([json.loads(callback_body(ref))]).encode(), id="array"),
    pytest.param(lambda ref: json.dumps({"status": True}).encode(), id="response-missing"),
    pytest.param(
        lambda ref: json.dumps({"status": True, "response": "Success"}).encode(),
        id="response-string",
    ),
    pytest.param(lambda ref: callback_body(ref, result_code="abc"), id="result-code-abc"),
    pytest.param(lambda ref: callback_body(ref, result_code=None), id="result-code-null"),
    pytest.param(lambda ref: without(callback_body(ref), "ResultCode"), id="result-code-missing"),
    pytest.param(lambda ref: without(callback_body(ref), "Amount"), id="paid-amount-missing"),
    pytest.param(lambda ref: callback_body(ref, amount="300"), id="amount-string"),
    pytest.param(lambda ref: callback_body(ref, amount=-300), id="amount-negative"),
    pytest.param(
        lambda ref: without(callback_body(ref), "ExternalReference"), id="reference-missing"
    ),
    pytest.param(lambda ref: callback_body(ref, ExternalReference=42), id="reference-number"),
]


@pytest.mark.parametrize("build", MALFORMED)
def test_signed_malformed_callback_is_a_bad_request_and_changes_nothing(
    app, client, redis_client, build
):
    order = create_order(client)

    response = post_callback(client, build(order["orderNumber"]))

    assert_error(response, 400)
    assert_untouched(app, redis_client, order)


def test_callback_for_an_unknown_reference_is_not_found(app, client, redis_client):
    order = create_order(client)

    response = post_callback(client, callback_body(UNKNOWN_REFERENCE))

    assert_error(response, 404)
    assert_untouched(app, redis_client, order)


# --- Redis down --------------------------------------------------------------------------------


def test_redis_down_never_fails_the_webhook(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    order = create_order(client)

    started = time.monotonic()
    response = pay(client, order)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.get_data(as_text=True)
    outcome = response.get_json()
    assert outcome["changed"] is True
    assert outcome["version"] == 2
    state = stored(app, order["orderId"])
    assert (state["paymentStatus"], state["status"], state["version"]) == ("completed", "paid", 2)
    assert elapsed < 10, f"the webhook took {elapsed:.1f} s with Redis down"


def test_redelivered_amount_mismatch_is_reported_as_a_duplicate(client):
    order = create_order(client)
    body = callback_body(order["orderNumber"], amount=299)
    first = post_callback(client, body).get_json()
    again = post_callback(client, body).get_json()
    assert first["changed"] is True and first["paymentStatus"] == "failed"
    assert again["changed"] is False and again["duplicate"] is True
    assert again["version"] == first["version"]


# Digit-like strings that are not ASCII integers are bad input, not a server fault.
@pytest.mark.parametrize("code", ["--5", "²"])
def test_signed_callback_with_an_odd_numeric_string_result_code_is_a_400(client, code):
    order = create_order(client)
    response = post_callback(client, callback_body(order["orderNumber"], result_code=code))
    assert response.status_code == 400, response.get_data(as_text=True)


# --- deliveries as providers send them -----------------------------------------------------------


def signed_headers(body: bytes, content_type: str | None) -> dict:
    """The signature header, and the Content-Type only when one is given."""
    headers = {"X-Webhook-Signature": sign(body, WEBHOOK_SECRET)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "",
    ],
)
def test_a_signed_callback_is_accepted_whatever_its_content_type(app, client, content_type):
    order = create_order(client)
    body = callback_body(order["orderNumber"])

    response = client.post(CALLBACK, data=body, headers=signed_headers(body, content_type))

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["changed"] is True
    state = stored(app, order["orderId"])
    assert (state["paymentStatus"], state["status"], state["version"]) == ("completed", "paid", 2)


def test_a_signed_body_that_is_not_json_is_refused_whatever_its_content_type(
    app, client, redis_client
):
    order = create_order(client)
    body = b"ExternalReference=" + order["orderNumber"].encode() + b"&ResultCode=0"

    response = client.post(CALLBACK, data=body, headers=signed_headers(body, "text/plain"))

    assert_error(response, 400)
    assert_untouched(app, redis_client, order)


@pytest.mark.parametrize(
    "written",
    [
        pytest.param(lambda hex_digits: hex_digits.upper(), id="uppercase"),
        pytest.param(
            lambda hex_digits: "".join(c.upper() if i % 2 else c for i, c in enumerate(hex_digits)),
            id="mixed-case",
        ),
    ],
)
def test_hex_digits_of_the_signature_may_be_in_either_case(app, client, written):
    order = create_order(client)
    body = callback_body(order["orderNumber"])
    hex_digits = sign(body, WEBHOOK_SECRET).removeprefix("sha256=")
    assert any(c.isalpha() for c in hex_digits)  # else the case would change nothing
    headers = {"X-Webhook-Signature": "sha256=" + written(hex_digits)}

    response = client.post(CALLBACK, data=body, headers=headers)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert stored(app, order["orderId"])["paymentStatus"] == "completed"


def test_an_uppercase_signature_of_another_body_is_still_refused(app, client, redis_client):
    order = create_order(client)
    body = callback_body(order["orderNumber"])
    other = callback_body(order["orderNumber"], result_code=1032)
    headers = {"X-Webhook-Signature": sign(other, WEBHOOK_SECRET).upper()}

    assert_error(client.post(CALLBACK, data=body, headers=headers), 401)
    assert_untouched(app, redis_client, order)


# --- every refusal is audited, logged and counted ------------------------------------------------


def last_event_id(app) -> int:
    with app.app_context():
        last = db.session.execute(db.select(db.func.max(PaymentEvent.id))).scalar()
        db.session.remove()
    return last or 0


def events_after(app, event_id: int) -> list[tuple]:
    """(outcome, reason, body_sha256, order_id) of each payment_events row written since."""
    with app.app_context():
        rows = db.session.execute(
            db.select(PaymentEvent).where(PaymentEvent.id > event_id).order_by(PaymentEvent.id)
        ).scalars()
        found = [(e.outcome, e.reason, e.body_sha256, e.order_id) for e in rows]
        db.session.remove()
    return found


def webhooks_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("orderwait_webhooks_total", {"outcome": outcome}) or 0.0


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def unsigned(body: bytes) -> tuple[bytes, dict]:
    return body, {"Content-Type": "application/json"}


def signed(body: bytes, content_type: str | None = "application/json") -> tuple[bytes, dict]:
    return body, signed_headers(body, content_type)


OVER_THE_LIMIT = 64 * 1024 + 1  # MAX_BODY_BYTES' default, plus one

# (the request for an order number, its status, the reason audited, the hash audited)
REFUSALS = [
    pytest.param(
        lambda ref: unsigned(callback_body(ref)),
        401,
        "missing or invalid signature",
        sha256,
        id="signature-missing",
    ),
    pytest.param(
        lambda ref: (callback_body(ref), signature_for(callback_body(ref), "not-the-secret")),
        401,
        "missing or invalid signature",
        sha256,
        id="signature-wrong",
    ),
    pytest.param(
        lambda ref: signed(b'{"status": true, "response": ', "text/plain"),
        400,
        "JSON",
        sha256,
        id="not-json",
    ),
    pytest.param(
        lambda ref: signed(callback_body(ref, amount="300"), None),
        400,
        "Amount",
        sha256,
        id="invalid-body",
    ),
    pytest.param(
        lambda ref: signed(callback_body(UNKNOWN_REFERENCE)),
        404,
        "unknown order reference",
        sha256,
        id="unknown-order",
    ),
    pytest.param(
        lambda ref: signed(callback_body(ref, Padding="x" * OVER_THE_LIMIT)),
        413,
        "body too large: Content-Length",
        lambda body: sha256(b""),  # refused on its Content-Length, before a byte was read
        id="too-large",
    ),
]


@pytest.mark.parametrize(("request_for", "status", "reason", "hashed"), REFUSALS)
def test_each_refusal_leaves_one_rejected_event_a_log_line_and_a_count(
    app, client, redis_client, caplog, request_for, status, reason, hashed
):
    order = create_order(client)
    body, headers = request_for(order["orderNumber"])
    before, rejected_before = last_event_id(app), webhooks_counted("rejected")
    caplog.set_level(logging.INFO, logger="app.payments.services")

    response = client.post(CALLBACK, data=body, headers=headers)

    assert_error(response, status)
    events_written = events_after(app, before)
    assert len(events_written) == 1, events_written
    outcome, audited_reason, audited_sha256, order_id = events_written[0]
    assert outcome == "rejected"
    assert reason in audited_reason
    assert audited_sha256 == hashed(body)
    assert order_id is None
    assert webhooks_counted("rejected") == rejected_before + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "app.payments.services"]
    assert lines == [f"webhook rejected: {audited_reason}"]
    assert_untouched(app, redis_client, order)


# --- a body without a Content-Length (chunked) ---------------------------------------------------


class Dribble:
    """A de-chunked wsgi.input as gunicorn gives it: `body` then, if `endless`, "x" without
    end; at most `piece` bytes per read. Counts what the application read."""

    def __init__(self, body: bytes, *, endless: bool = False, piece: int = 1000):
        self.body, self.endless, self.piece = body, endless, piece
        self.taken = 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "an unbounded read of a chunked body"
        size = min(size, self.piece)
        data = self.body[self.taken : self.taken + size]
        if self.endless:
            data += b"x" * (size - len(data))
        self.taken += len(data)
        return data


def post_chunked(app, path: str, stream: Dribble, headers: dict) -> tuple[str, dict]:
    """POST `stream` as a server does a chunked body: no CONTENT_LENGTH, the stream ended by
    the server (wsgi.input_terminated). Returns the status line and the JSON answer."""
    environ = EnvironBuilder(
        path=path, method="POST", headers={"Transfer-Encoding": "chunked", **headers}
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": stream, "wsgi.input_terminated": True})
    answer, status, _headers = run_wsgi_app(app, environ, buffered=True)
    return status, json.loads(b"".join(answer))


def test_a_signed_chunked_callback_without_content_type_is_accepted(app):
    client = app.test_client()
    order = create_order(client)
    body = callback_body(order["orderNumber"])

    status, answer = post_chunked(app, CALLBACK, Dribble(body, piece=7), signed_headers(body, None))

    assert status.startswith("200"), answer
    assert stored(app, order["orderId"])["paymentStatus"] == "completed"


def test_an_endless_chunked_callback_is_413_after_reading_one_byte_past_the_limit(
    app, redis_client
):
    limit = app.config["MAX_CONTENT_LENGTH"]
    client = app.test_client()
    order = create_order(client)
    start = callback_body(order["orderNumber"])[:-2] + b', "Padding": "'
    stream = Dribble(start, endless=True)
    before = last_event_id(app)

    status, answer = post_chunked(app, CALLBACK, stream, {"X-Webhook-Signature": "sha256=00"})

    assert status.startswith("413"), answer
    assert answer["success"] is False
    assert stream.taken == limit + 1
    read = (start + b"x" * limit)[: limit + 1]
    [(outcome, reason, body_sha256, _)] = events_after(app, before)
    assert (outcome, body_sha256) == ("rejected", sha256(read))
    assert reason == f"body too large: over {limit} bytes; body_sha256 is of its first {limit + 1}"
    assert_untouched(app, redis_client, order)


def test_an_endless_chunked_order_is_413_after_reading_one_byte_past_the_limit(app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    stream = Dribble(json.dumps(order_body())[:-1].encode() + b', "padding": "', endless=True)
    with app.app_context():
        orders_before = db.session.execute(db.select(db.func.count(Order.id))).scalar()
        db.session.remove()

    status, answer = post_chunked(app, "/api/orders", stream, {"Content-Type": "application/json"})

    assert status.startswith("413"), answer
    assert stream.taken == limit + 1
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(Order.id))).scalar() == orders_before
        db.session.remove()


@pytest.mark.parametrize(
    "extra",
    [
        {"ResultCode": "00"},
        {"ResultCode": " 0 "},
        {"ResultCode": 0.0},
        {"Phone": 254712345678, "MerchantRequestID": 2961, "Status": None, "ResultDesc": 7},
    ],
    ids=["code-00", "code-padded", "code-float", "unused-fields-of-any-type"],
)
def test_a_provider_that_sends_its_fields_loosely_still_settles_the_order(client, extra):
    order = create_order(client)
    body = json.loads(callback_body(order["orderNumber"]))
    body["response"].update(extra)
    body["status"] = 1
    response = post_callback(client, json.dumps(body).encode())
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["paymentStatus"] == "completed"


def test_an_amount_with_a_fraction_of_a_cent_is_a_mismatch_never_a_payment(client):
    order = create_order(client, amount=100)
    response = post_callback(client, callback_body(order["orderNumber"], amount=99.995))
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["paymentStatus"], answer["reason"]) == ("failed", "amount_mismatch")
