"""Bad input and abuse: the audit trail, body limits, headers, CORS, rate and wait limits,
and what responses and logs never contain. Real Redis and PostgreSQL."""

import json
import logging
import time

import flask
import gevent

from app.extensions import db
from app.payments.models import PaymentEvent
from tests.support import servers
from tests.support.helpers import (
    assert_error,
    auth,
    callback_body,
    create_order,
    order_body,
    pay,
    post_callback,
    signature_for,
)


def audit(app) -> list[tuple[str, str | None, str | None]]:
    with app.app_context():
        rows = db.session.execute(db.select(PaymentEvent).order_by(PaymentEvent.id)).scalars()
        trail = [(e.outcome, e.reason, e.order_number) for e in rows]
        db.session.remove()
    return trail


def clear_audit(app) -> None:
    with app.app_context():
        db.session.execute(db.delete(PaymentEvent))
        db.session.commit()


# -- the audit trail -------------------------------------------------------------------------


def test_every_callback_is_recorded_with_its_outcome_and_reason(app, client):
    clear_audit(app)
    order = create_order(client)
    number = order["orderNumber"]
    body = callback_body(number)

    assert post_callback(client, body).status_code == 200  # accepted
    assert post_callback(client, body).status_code == 200  # duplicate
    assert pay(client, order, result_code=1032).status_code == 200  # ignored: already paid
    assert post_callback(client, body, secret="wrong").status_code == 401
    bad = b"{not json"
    assert (
        client.post("/api/payhero/callback", data=bad, headers=signature_for(bad)).status_code
        == 400
    )
    assert pay(client, {"orderNumber": "ORD-0-NOSUCH"}).status_code == 404

    assert audit(app) == [
        ("accepted", None, number),
        ("duplicate", None, number),
        ("ignored", "order already completed", number),
        ("rejected", "missing or invalid signature", None),
        ("rejected", "body is not valid JSON", None),
        ("rejected", "unknown order reference", "ORD-0-NOSUCH"),
    ]


def test_an_amount_mismatch_is_audited_with_its_reason(app, client):
    clear_audit(app)
    order = create_order(client)
    pay(client, order, amount=1)
    assert audit(app) == [("accepted", "amount_mismatch", order["orderNumber"])]


# -- bodies ----------------------------------------------------------------------------------


def test_an_oversized_body_is_413_and_changes_nothing(app, client):
    clear_audit(app)
    order = create_order(client)
    huge = json.dumps({**order_body(), "padding": "x" * 70_000}).encode()
    response = client.post("/api/orders", data=huge, content_type="application/json")
    assert_error(response, 413)

    big_callback = callback_body(order["orderNumber"], Padding="x" * 70_000)
    assert_error(post_callback(client, big_callback), 413)
    got = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert got["version"] == 1


def test_a_signed_callback_that_is_not_json_is_400_and_changes_nothing(client):
    order = create_order(client)
    body = b"ResultCode=0&ExternalReference=" + order["orderNumber"].encode()
    headers = {**signature_for(body), "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post("/api/payhero/callback", data=body, headers=headers)
    assert "JSON" in assert_error(response, 400)
    got = client.get(f"/api/orders/{order['orderId']}", headers=auth(order)).get_json()
    assert got["version"] == 1


def test_unknown_routes_and_methods_answer_json(client):
    assert_error(client.get("/api/nothing-here"), 404)
    assert_error(client.delete("/api/orders"), 405)


# -- headers and CORS ------------------------------------------------------------------------


def test_pages_carry_a_strict_content_security_policy(client):
    for path in ("/checkout", "/admin", "/orders/00000000-0000-4000-8000-000000000000"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert b"<script>" not in response.data  # no inline script to allow
    api = client.get("/healthz")
    assert api.headers["X-Content-Type-Options"] == "nosniff"


def test_cors_only_for_configured_origins(make_app):
    open_app = make_app(CORS_ORIGINS=["https://shop.example"]).test_client()
    preflight = open_app.options(
        "/api/orders",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    other = open_app.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers

    closed = make_app().test_client()
    response = closed.get("/api/orders/x", headers={"Origin": "https://shop.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_cross_origin_wait_takes_the_one_wait_path_and_answers_the_same(make_app):
    """Waits are plain routes (app/plain_wsgi.py); a cross-origin wait with CORS on takes the
    same path, never Flask's, and answers the same bytes with the cross-origin headers."""
    lean = make_app().test_client()
    order = create_order(lean)
    url = f"/api/orders/{order['orderId']}/wait?timeout=0&since=0"
    direct = lean.get(url, headers=auth(order))
    cors = make_app(CORS_ORIGINS=["https://shop.example"]).test_client()
    served_by_flask: list = []
    with flask.request_started.connected_to(lambda app, **_: served_by_flask.append(app)):
        through_flask = cors.get(url, headers={**auth(order), "Origin": "https://shop.example"})
    assert served_by_flask == []
    assert through_flask.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Access-Control-Allow-Origin" not in direct.headers
    for response in (direct, through_flask):
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert direct.data == through_flask.data  # same bytes: same encoder, same fields
    assert direct.get_json()["source"] == "cache"

    for path, status in [
        (f"/api/orders/{order['orderId']}/wait?timeout=x", 400),
        (f"/api/orders/{order['orderId']}/wait", 401),
        ("/api/orders/not-an-id/wait?token=t", 404),
    ]:
        lean_error, flask_error = lean.get(path), cors.get(path, headers={"Origin": "x"})
        assert lean_error.status_code == flask_error.status_code == status, path
        assert lean_error.data == flask_error.data, path


def test_a_cross_origin_webhook_takes_the_one_webhook_path_and_answers_the_same(make_app):
    """The webhook is a plain route (app/payments/routes.py); with CORS on, a request with an
    Origin takes the same path, never Flask's. Every outcome has the same bytes both ways."""
    lean = make_app().test_client()
    through_flask = make_app(CORS_ORIGINS=["https://shop.example"]).test_client()
    origin = {"Origin": "https://shop.example"}
    url = "/api/payhero/callback"

    def both(order_for, headers_for, body_for):
        """Post to each app; check that Flask served neither."""
        answers = []
        for client, extra in ((lean, {}), (through_flask, origin)):
            order = order_for()
            body = body_for(order)
            served_by_flask: list = []
            with flask.request_started.connected_to(
                lambda app, seen=served_by_flask, **_: seen.append(app)
            ):
                answers.append(client.post(url, data=body, headers={**headers_for(body), **extra}))
            assert served_by_flask == []
            if order is not None:  # the order ids differ, the rest must not
                answers[-1].set_data(answers[-1].data.replace(order["orderId"].encode(), b"id"))
        return answers

    def new_order():
        return create_order(lean)

    signed = signature_for
    paid_twice = create_order(lean)
    pay(lean, paid_twice)
    cases = {
        "accepted": (new_order, signed, lambda o: callback_body(o["orderNumber"]), 200),
        "amount mismatch": (
            new_order,
            signed,
            lambda o: callback_body(o["orderNumber"], amount=1),
            200,
        ),
        "duplicate": (lambda: paid_twice, signed, lambda o: callback_body(o["orderNumber"]), 200),
        "unsigned": (
            new_order,
            lambda b: {"Content-Type": "application/json"},
            lambda o: callback_body(o["orderNumber"]),
            401,
        ),
        "not JSON": (lambda: None, signed, lambda o: b"{nope", 400),
        "unknown order": (lambda: None, signed, lambda o: callback_body("ORD-0-NOSUCH"), 404),
        "not declared JSON": (
            lambda: None,
            lambda b: {**signed(b), "Content-Type": "text/plain"},
            lambda o: callback_body("ORD-0-NOSUCH"),
            404,
        ),
        "too large": (lambda: None, signed, lambda o: b" " * (64 * 1024 + 1), 413),
    }
    for name, (order_for, headers_for, body_for, status) in cases.items():
        direct, through = both(order_for, headers_for, body_for)
        assert direct.status_code == through.status_code == status, name
        assert direct.data == through.data, name
        assert "Access-Control-Allow-Origin" not in direct.headers, name
        assert through.headers["Access-Control-Allow-Origin"] == "https://shop.example", name
        for response in (direct, through):
            assert response.headers["Content-Type"] == "application/json", name
            assert response.headers["X-Content-Type-Options"] == "nosniff", name
            assert response.headers["Referrer-Policy"] == "no-referrer", name
    other_method = lean.get(url)  # other methods: a JSON 405 that says what is allowed
    assert other_method.status_code == 405
    assert other_method.headers["Allow"] == "OPTIONS, POST"
    assert other_method.get_json()["success"] is False


# -- rate and wait limits --------------------------------------------------------------------


def test_order_creation_is_rate_limited_and_recovers(make_app):
    client = make_app(ORDER_CREATE_RATE_LIMIT="3 per 2 seconds").test_client()
    for _ in range(3):
        assert client.post("/api/orders", json=order_body()).status_code == 201
    refused = client.post("/api/orders", json=order_body())
    assert_error(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    time.sleep(2.1)
    assert client.post("/api/orders", json=order_body()).status_code == 201


def test_order_rate_limit_falls_back_to_memory_without_redis(make_app):
    dead = f"redis://127.0.0.1:{servers.free_port()}/0"
    client = make_app(REDIS_URL=dead, ORDER_CREATE_RATE_LIMIT="2 per minute").test_client()
    assert [client.post("/api/orders", json=order_body()).status_code for _ in range(3)] == [
        201,
        201,
        429,
    ]


def hold(client, order, timeout_ms=5000):
    return gevent.spawn(
        client.get,
        f"/api/orders/{order['orderId']}/wait?timeout={timeout_ms}&since=1",
        headers=auth(order),
    )


def test_held_waits_are_limited_per_order_with_retry_after(make_app):
    app = make_app(WAITS_PER_ORDER=2)
    client = app.test_client()
    order = create_order(client)
    held = [hold(client, order) for _ in range(2)]
    servers.eventually(lambda: app.extensions["hub"].parked == 2, 5, "two waits held")

    refused = client.get(
        f"/api/orders/{order['orderId']}/wait?timeout=5000&since=1", headers=auth(order)
    )
    assert "this order" in assert_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    # Answers that do not block need no slot.
    assert (
        client.get(
            f"/api/orders/{order['orderId']}/wait?timeout=0&since=0", headers=auth(order)
        ).status_code
        == 200
    )

    pay(client, order)
    assert all(g.get(timeout=5).status_code == 200 for g in held)
    assert hold(client, create_order(client), timeout_ms=100).get(timeout=5).status_code == 200
    again = client.get(
        f"/api/orders/{order['orderId']}/wait?timeout=100&since=2", headers=auth(order)
    )
    assert again.status_code == 200  # the slots were given back


def test_held_waits_are_limited_per_client_address(make_app):
    app = make_app(WAITS_PER_CLIENT=2)
    client = app.test_client()
    orders = [create_order(client) for _ in range(3)]
    held = [hold(client, o) for o in orders[:2]]
    servers.eventually(lambda: app.extensions["hub"].parked == 2, 5, "two waits held")
    refused = client.get(
        f"/api/orders/{orders[2]['orderId']}/wait?timeout=5000&since=1", headers=auth(orders[2])
    )
    assert "this address" in assert_error(refused, 429)
    for order in orders[:2]:
        pay(client, order)
    gevent.joinall(held, timeout=5)


def test_waits_without_the_token_take_no_slot(make_app):
    app = make_app(WAITS_PER_ORDER=1)
    client = app.test_client()
    order = create_order(client)
    for _ in range(5):
        response = client.get(
            f"/api/orders/{order['orderId']}/wait?timeout=2000&since=1",
            headers={"Authorization": "Bearer forged"},
        )
        assert response.status_code == 404
    held = hold(client, order)
    servers.eventually(lambda: app.extensions["hub"].parked == 1, 5, "the owner's wait held")
    pay(client, order)
    assert held.get(timeout=5).get_json()["paymentStatus"] == "completed"


# -- privacy ---------------------------------------------------------------------------------


def test_no_token_secret_or_email_in_responses_or_logs(app, client, caplog):
    caplog.set_level(logging.DEBUG)
    order = create_order(client)
    token, email = order["accessToken"], order["customer"]["email"]
    wait = client.get(f"/api/orders/{order['orderId']}/wait?timeout=0&since=0", headers=auth(order))
    paid = pay(client, order)
    shown = client.get(f"/api/orders/{order['orderId']}", headers=auth(order))

    for response in (wait, paid, shown):
        text = response.get_data(as_text=True)
        assert token not in text
        assert app.config["WEBHOOK_SECRET"] not in text
    assert "accessToken" not in shown.get_json() and "accessToken" not in wait.get_json()
    assert token not in caplog.text and email not in caplog.text


def test_webhook_counters_count_each_callback_once(make_app, redis_client):
    app = make_app(ADMIN_TOKENS=["admin"])
    client = app.test_client()
    order = create_order(client)
    body = callback_body(order["orderNumber"])
    post_callback(client, body)  # accepted
    post_callback(client, body)  # duplicate
    post_callback(client, body, secret="wrong")  # rejected
    stats = client.post("/api/admin/stats/refresh", headers={"Authorization": "Bearer admin"})
    assert stats.get_json()["webhooks"] == {"received": 3, "duplicated": 1, "rejected": 1}
