"""The order endpoints' contract: what they take and what they answer, as models.

Requests are validated by these models and the OpenAPI document is generated from them
(app/openapi.py). The answers are built by Order.to_json and the wait; the models below say
their shape, and the contract tests check every answer against them."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from app import validation as v

MAX_AMOUNT = 10_000_000
MAX_TICKETS = 100
# A wait's `timeout` (milliseconds) may ask for any time up to this; the server holds at most
# its LONGPOLL_MAX_TIMEOUT_MS of it, a setting, so that is no bound of the API.
MAX_WAIT_TIMEOUT_MS = v.INT32[1]
# What people type may come with spaces around it (a phone keyboard adds one after an
# email): the patterns admit them, the value is kept without them. Lengths count them.
EMAIL = r"^ *[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+ *$"
CURRENCY = r"^[A-Z]{3}$"
PHONE = r"^ *\+?[0-9]{9,15} *$"


class Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Customer(v.Model, Camel):
    email: v.text(254, pattern=EMAIL)
    first_name: v.text(100)
    last_name: v.text(100)


class NewOrder(v.Model, Camel):
    amount: v.money(MAX_AMOUNT) = Field(description="From 0.01 to 10,000,000, rounded to the cent.")
    currency: v.text(3, pattern=CURRENCY) = "KES"
    ticket_count: v.integer(ge=1, le=MAX_TICKETS) = 1
    customer: Customer
    phone: v.text(18, pattern=PHONE) | None = None


class WaitQuery(v.Model):
    """The wait's query string."""

    timeout: v.query_integer(ge=0, le=MAX_WAIT_TIMEOUT_MS) | None = Field(
        None,
        description="Milliseconds to hold (default LONGPOLL_DEFAULT_TIMEOUT_MS); the server "
        "holds at most LONGPOLL_MAX_TIMEOUT_MS (120,000 unless set) of them.",
    )
    since: v.query_integer(ge=0, le=v.INT32[1]) | None = Field(
        None,
        description="The version the client has; absent: the version current when the wait starts.",
    )


# -- answers ---------------------------------------------------------------------------------

PaymentStatus = Literal["processing", "completed", "failed", "cancelled", "expired"]
OrderStatus = Literal["pending", "paid", "failed", "cancelled", "expired"]


class CustomerOut(Camel):
    email: str
    first_name: str
    last_name: str


class Order(Camel):
    order_id: str = Field(json_schema_extra={"format": "uuid"})
    order_number: str
    payment_status: PaymentStatus
    status: OrderStatus
    total_amount: float
    currency: str
    ticket_count: int
    customer: CustomerOut
    version: int = Field(ge=1)
    failure_reason: str | None
    mpesa_receipt: str | None = Field(description="The M-PESA receipt number, once paid.")
    updated_at: datetime


class CreatedOrder(Order):
    access_token: str = Field(description="The order token: shown once, needed for every read.")


class WaitAnswer(Order):
    changed: bool
    source: Literal["cache", "db", "redis", "poll", "timeout", "shutdown"]
    retry_in_ms: int | None = Field(
        None,
        ge=0,
        description="On a `shutdown` answer: wait this long before asking again (drawn at "
        "random over SHUTDOWN_RECONNECT_WINDOW_MS, so that the clients of a stopping worker "
        "do not all return at once).",
    )


def parse_new_order(payload) -> NewOrder:
    return v.validated(NewOrder, payload)


def parse_wait(args, *, default_timeout_ms: int, max_timeout_ms: int) -> tuple[int, int | None]:
    """(milliseconds to hold, the client's version) from the wait's query string."""
    query = v.validated(WaitQuery, {name: args.get(name) for name in ("timeout", "since")})
    timeout_ms = default_timeout_ms if query.timeout is None else query.timeout
    return min(timeout_ms, max_timeout_ms), query.since
