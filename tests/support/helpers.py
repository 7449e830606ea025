"""Requests the tests make again and again: orders, signed callbacks."""

import json
from contextlib import contextmanager

from sqlalchemy import event

from app.extensions import db
from app.payments.signature import sign

WEBHOOK_SECRET = "test-webhook-secret"

CUSTOMER = {"email": "wanjiru@example.com", "firstName": "Wanjiru", "lastName": "Kamau"}


def order_body(**overrides) -> dict:
    return {"amount": 300, "customer": dict(CUSTOMER), **overrides}


def create_order(client, **overrides) -> dict:
    response = client.post("/api/orders", json=order_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def auth(order: dict) -> dict:
    return {"Authorization": f"Bearer {order['accessToken']}"}


def callback_body(order_number: str, result_code=0, amount=300, **extra) -> bytes:
    response = {
        "Amount": amount,
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ExternalReference": order_number,
        "MerchantRequestID": "2961-6294520-1",
        "MpesaReceiptNumber": "SJK4A1B2C3",
        "Phone": "254712345678",
        "ResultCode": result_code,
        "ResultDesc": "The service request is processed successfully.",
        "Status": "Success" if result_code == 0 else "Failed",
        **extra,
    }
    return json.dumps({"status": True, "response": response}).encode()


def signature_for(body: bytes, secret: str = WEBHOOK_SECRET) -> dict:
    return {"X-Webhook-Signature": sign(body, secret), "Content-Type": "application/json"}


def post_callback(client, body: bytes, secret: str = WEBHOOK_SECRET):
    """POST a signed callback through a Flask test client."""
    return client.post("/api/payhero/callback", data=body, headers=signature_for(body, secret))


def pay(client, order: dict, **kwargs):
    return post_callback(client, callback_body(order["orderNumber"], **kwargs))


def assert_error(response, status: int) -> str:
    """An error response: the status, and JSON {"success": false, "error": "<non-empty>"}."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"].strip()
    return body["error"]


def assert_json_error(response, status: int) -> None:
    """The same, for a response from a live server (requests)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"].strip()


@contextmanager
def statements_run(app):
    """What the app sends the database while inside, seen at the driver.

    PostgreSQL: (first word, whether the connection was in autocommit) of every statement a
    psycopg2 cursor executes, SQLAlchemy's and those run straight on the driver alike; in
    autocommit the driver sends no BEGIN or COMMIT around it. SQLite: the first word of
    every statement SQLAlchemy sends, and "COMMIT" for each commit.
    """
    seen = []
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "postgresql":
        import psycopg2.extensions

        class Recording(psycopg2.extensions.cursor):
            def execute(self, query, params=None):
                seen.append((query.split()[0].upper(), self.connection.autocommit))
                return super().execute(query, params)

        listeners = {
            "checkout": lambda dbapi_connection, *_: setattr(
                dbapi_connection, "cursor_factory", Recording
            ),
            "checkin": lambda dbapi_connection, *_: setattr(
                dbapi_connection, "cursor_factory", psycopg2.extensions.cursor
            ),
        }
    else:
        listeners = {
            "before_cursor_execute": lambda _c, _cur, statement, *_: seen.append(
                statement.split()[0].upper()
            ),
            "commit": lambda _conn: seen.append("COMMIT"),
        }
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)
