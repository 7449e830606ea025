"""POST /api/orders and GET /api/orders/<id> through the Flask test client."""

import hashlib
import json
import re
import uuid

import pytest

from app.extensions import db
from app.orders.models import Order
from tests.support.helpers import CUSTOMER, assert_error, auth, create_order, order_body

ORDER_NUMBER = re.compile(r"^ORD-\d{13}-[A-Z0-9]{6}$")
ORDER_FIELDS = {
    "orderId",
    "orderNumber",
    "paymentStatus",
    "status",
    "totalAmount",
    "currency",
    "ticketCount",
    "customer",
    "version",
    "updatedAt",
}


def order_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(db.select(db.func.count()).select_from(Order))
        db.session.remove()
    return count


def without_customer_field(field: str) -> dict:
    body = order_body()
    del body["customer"][field]
    return body


def with_customer(**fields) -> dict:
    body = order_body()
    body["customer"].update(fields)
    return body


def raw_order(amount_literal: str) -> str:
    """An order body whose amount is a literal JSON text (NaN, 1e400) json.dumps cannot write."""
    return json.dumps(order_body(amount="__AMOUNT__")).replace('"__AMOUNT__"', amount_literal)


def json_post(body) -> dict:
    return {"json": body}


def raw_post(text: str, content_type: str = "application/json") -> dict:
    return {"data": text, "content_type": content_type}


NO_AMOUNT = {k: v for k, v in order_body().items() if k != "amount"}
NO_CUSTOMER = {k: v for k, v in order_body().items() if k != "customer"}

BAD_ORDERS = [
    pytest.param(raw_post("{not json"), "body", id="body-not-json"),
    pytest.param(json_post("an order, please"), "body", id="body-a-string"),
    pytest.param(json_post(42), "body", id="body-a-number"),
    pytest.param(json_post([order_body()]), "body", id="body-a-list"),
    pytest.param(json_post(NO_AMOUNT), "amount", id="amount-missing"),
    pytest.param(json_post(order_body(amount=None)), "amount", id="amount-null"),
    pytest.param(json_post(order_body(amount=0)), "amount", id="amount-zero"),
    pytest.param(json_post(order_body(amount=-300)), "amount", id="amount-negative"),
    pytest.param(json_post(order_body(amount="300")), "amount", id="amount-string"),
    pytest.param(json_post(order_body(amount=True)), "amount", id="amount-true"),
    pytest.param(json_post(order_body(amount=0.004)), "amount", id="amount-under-a-cent"),
    pytest.param(json_post(order_body(amount=1e15)), "amount", id="amount-huge"),
    pytest.param(raw_post(raw_order("1e400")), "amount", id="amount-overflows-to-infinity"),
    pytest.param(raw_post(raw_order("NaN")), "amount", id="amount-nan"),
    pytest.param(raw_post(raw_order("Infinity")), "amount", id="amount-infinity"),
    pytest.param(json_post(order_body(currency="kes")), "currency", id="currency-lowercase"),
    pytest.param(json_post(order_body(currency="KESX")), "currency", id="currency-4-letters"),
    pytest.param(json_post(order_body(currency=404)), "currency", id="currency-number"),
    pytest.param(json_post(order_body(ticketCount=0)), "ticketCount", id="tickets-0"),
    pytest.param(json_post(order_body(ticketCount=101)), "ticketCount", id="tickets-101"),
    pytest.param(json_post(order_body(ticketCount=1.5)), "ticketCount", id="tickets-1.5"),
    pytest.param(json_post(order_body(ticketCount="2")), "ticketCount", id="tickets-string"),
    pytest.param(json_post(order_body(ticketCount=True)), "ticketCount", id="tickets-true"),
    pytest.param(json_post(NO_CUSTOMER), "customer", id="customer-missing"),
    pytest.param(json_post(order_body(customer="wanjiru")), "customer", id="customer-string"),
    pytest.param(json_post(order_body(customer=[CUSTOMER])), "customer", id="customer-list"),
    pytest.param(json_post(without_customer_field("email")), "email", id="email-missing"),
    pytest.param(json_post(with_customer(email="not-an-email")), "email", id="email-invalid"),
    pytest.param(
        json_post(with_customer(email="a" * 288 + "@example.com")), "email", id="email-300-chars"
    ),
    pytest.param(json_post(without_customer_field("firstName")), "firstName", id="first-missing"),
    pytest.param(json_post(with_customer(firstName="")), "firstName", id="first-empty"),
    pytest.param(json_post(with_customer(firstName="   ")), "firstName", id="first-blank"),
    pytest.param(json_post(with_customer(firstName=123)), "firstName", id="first-number"),
    pytest.param(json_post(without_customer_field("lastName")), "lastName", id="last-missing"),
    pytest.param(json_post(order_body(phone="abc")), "phone", id="phone-letters"),
    pytest.param(json_post(order_body(phone=254712345678)), "phone", id="phone-number"),
]


def test_create_order_returns_the_new_pending_order_with_its_token(client):
    response = client.post("/api/orders", json=order_body())

    assert response.status_code == 201
    order = response.get_json()
    assert str(uuid.UUID(order["orderId"])) == order["orderId"]
    assert ORDER_NUMBER.fullmatch(order["orderNumber"]), order["orderNumber"]
    assert isinstance(order["accessToken"], str) and len(order["accessToken"]) >= 32
    assert order["paymentStatus"] == "processing"
    assert order["status"] == "pending"
    assert order["version"] == 1
    assert order["totalAmount"] == 300
    assert order["currency"] == "KES"
    assert order["ticketCount"] == 1
    assert order["customer"] == CUSTOMER
    assert ORDER_FIELDS <= order.keys()


@pytest.mark.parametrize(
    "sent, kept",
    [(19.99, 19.99), (1.005, 1.01), (0.01, 0.01), (30.0, 30), (0.30000000000000004, 0.3)],
)
def test_an_amount_is_kept_rounded_to_the_cent(client, sent, kept):
    assert create_order(client, amount=sent)["totalAmount"] == kept


def test_create_order_keeps_the_given_currency_ticket_count_and_amount(client):
    order = create_order(client, amount=1250.5, currency="USD", ticketCount=4, phone="254712345678")

    assert order["totalAmount"] == 1250.5
    assert order["currency"] == "USD"
    assert order["ticketCount"] == 4


def test_each_order_gets_its_own_id_number_and_token(client):
    first, second = create_order(client), create_order(client)

    assert first["orderId"] != second["orderId"]
    assert first["orderNumber"] != second["orderNumber"]
    assert first["accessToken"] != second["accessToken"]


def test_access_token_is_stored_only_as_its_hash(app, client):
    order = create_order(client)
    token = order["accessToken"]

    with app.app_context():
        stored = db.session.get(Order, order["orderId"]).access_token_hash
        db.session.remove()

    assert stored != token
    assert token not in stored
    assert stored == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(("request_kwargs", "field"), BAD_ORDERS)
def test_invalid_order_is_rejected_naming_the_field_and_creates_nothing(
    app, client, request_kwargs, field
):
    before = order_count(app)

    response = client.post("/api/orders", **request_kwargs)

    error = assert_error(response, 400)
    assert field in error
    assert order_count(app) == before


def test_a_body_that_is_not_json_is_415_and_creates_nothing(app, client):
    before = order_count(app)
    response = client.post(
        "/api/orders", **raw_post("amount=300", "application/x-www-form-urlencoded")
    )
    assert "JSON" in assert_error(response, 415)
    assert order_count(app) == before


def test_get_order_with_bearer_token_returns_the_order(client):
    created = create_order(client)

    response = client.get(f"/api/orders/{created['orderId']}", headers=auth(created))

    assert response.status_code == 200
    order = response.get_json()
    assert ORDER_FIELDS <= order.keys()
    assert "accessToken" not in order
    expected = {k: v for k, v in created.items() if k in ORDER_FIELDS}
    assert {k: order[k] for k in expected} == expected
    assert order["paymentStatus"] == "processing"
    assert order["status"] == "pending"
    assert order["version"] == 1
    assert isinstance(order["updatedAt"], str) and order["updatedAt"].endswith("Z")


def test_get_order_with_token_query_parameter_returns_the_order(client):
    created = create_order(client)

    response = client.get(
        f"/api/orders/{created['orderId']}", query_string={"token": created["accessToken"]}
    )

    assert response.status_code == 200
    order = response.get_json()
    assert ORDER_FIELDS <= order.keys()
    assert order["orderId"] == created["orderId"]
    assert order["orderNumber"] == created["orderNumber"]
    assert order["customer"] == CUSTOMER
    assert order["version"] == 1


def test_get_order_without_token_is_unauthorized(client):
    created = create_order(client)

    assert_error(client.get(f"/api/orders/{created['orderId']}"), 401)


def test_get_order_with_empty_bearer_is_unauthorized(client):
    created = create_order(client)

    response = client.get(f"/api/orders/{created['orderId']}", headers={"Authorization": "Bearer "})

    assert_error(response, 401)


def test_get_order_with_wrong_token_is_not_found(client):
    created = create_order(client)
    other = create_order(client)

    response = client.get(f"/api/orders/{created['orderId']}", headers=auth(other))

    assert_error(response, 404)


def test_unknown_and_malformed_order_ids_look_exactly_like_a_wrong_token(client):
    created = create_order(client)
    wrong_token = assert_error(
        client.get(
            f"/api/orders/{created['orderId']}", headers={"Authorization": "Bearer not-the-token"}
        ),
        404,
    )

    unknown = assert_error(client.get(f"/api/orders/{uuid.uuid4()}", headers=auth(created)), 404)
    malformed = assert_error(client.get("/api/orders/not-a-uuid", headers=auth(created)), 404)

    assert unknown == wrong_token
    assert malformed == wrong_token


def test_an_integral_number_is_an_integer_as_json_schema_says(client):
    assert create_order(client, ticketCount=30.0)["ticketCount"] == 30


def test_every_wrong_field_is_named_at_once(client):
    body = order_body(amount=-1, currency="kes", ticketCount=0)
    body["customer"] = {"email": "nope", "lastName": "\x00"}
    response = client.post("/api/orders", json=body)
    assert response.status_code == 400
    answer = response.get_json()
    fields = [error["field"] for error in answer["errors"]]
    assert fields == [
        "amount",
        "currency",
        "ticketCount",
        "customer.email",
        "customer.firstName",
        "customer.lastName",
    ]
    assert all(error["message"] for error in answer["errors"])
    assert all(field in answer["error"] for field in fields)


def test_what_people_type_may_come_with_spaces_around_it(client):
    customer = {"email": " wanjiru@example.com ", "firstName": " Wanjiru", "lastName": "Kamau "}
    order = create_order(client, customer=customer, phone=" +254712345678 ")
    assert order["customer"] == {
        "email": "wanjiru@example.com",
        "firstName": "Wanjiru",
        "lastName": "Kamau",
    }
