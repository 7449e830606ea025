"""Input of the order endpoints, validated into plain values."""

import re
from dataclasses import dataclass
from decimal import Decimal

from app import validation as v

MAX_AMOUNT = Decimal("10000000")
MAX_TICKETS = 100
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
CURRENCY = re.compile(r"[A-Z]{3}")
PHONE = re.compile(r"\+?\d{9,15}")


@dataclass(frozen=True)
class NewOrder:
    amount: Decimal
    currency: str
    ticket_count: int
    email: str
    first_name: str
    last_name: str
    phone: str | None


def parse_new_order(payload) -> NewOrder:
    body = v.json_object(payload)
    customer = v.required(body, "customer")
    if not isinstance(customer, dict):
        raise v.ValidationError("customer must be an object")
    currency = body.get("currency", "KES")
    ticket_count = body.get("ticketCount", 1)
    phone = body.get("phone")
    return NewOrder(
        amount=v.money(v.required(body, "amount"), "amount", maximum=MAX_AMOUNT),
        currency=v.text(currency, "currency", max_len=3, pattern=CURRENCY),
        ticket_count=v.integer(ticket_count, "ticketCount", minimum=1, maximum=MAX_TICKETS),
        email=v.text(
            v.required(customer, "email", "customer.email"),
            "customer.email",
            max_len=254,
            pattern=EMAIL,
        ),
        first_name=v.text(
            v.required(customer, "firstName", "customer.firstName"),
            "customer.firstName",
            max_len=100,
        ),
        last_name=v.text(
            v.required(customer, "lastName", "customer.lastName"), "customer.lastName", max_len=100
        ),
        phone=None if phone is None else v.text(phone, "phone", max_len=16, pattern=PHONE),
    )


@dataclass(frozen=True)
class WaitRequest:
    timeout_ms: int
    since: int | None


def parse_wait(args, *, default_timeout_ms: int, max_timeout_ms: int) -> WaitRequest:
    timeout_ms = v.integer_param(args.get("timeout"), "timeout")
    since = v.integer_param(args.get("since"), "since")
    if since is not None and since < 0:
        raise v.ValidationError("since must be a version (an integer >= 0)")
    if timeout_ms is None:
        timeout_ms = default_timeout_ms
    return WaitRequest(timeout_ms=min(max(timeout_ms, 0), max_timeout_ms), since=since)
