"""Order use cases: create, read with its token, expire the stale."""

import logging
import secrets
import string
import time
from datetime import timedelta

from sqlalchemy.orm.exc import StaleDataError

from app.database import retry_if_died_while_pooled
from app.extensions import db
from app.logs import fields, mask_email

from . import events, reads
from .access import new_token
from .models import Order, utcnow
from .schemas import NewOrder

log = logging.getLogger(__name__)

_ORDER_NUMBER_ALPHABET = string.ascii_uppercase + string.digits


def new_order_number() -> str:
    suffix = "".join(secrets.choice(_ORDER_NUMBER_ALPHABET) for _ in range(6))
    return f"ORD-{int(time.time() * 1000)}-{suffix}"


@retry_if_died_while_pooled  # the INSERT is the first statement: nothing committed
def create_order(new: NewOrder) -> tuple[Order, str]:
    """Create a pending order; returns it with its access token (shown to the customer once)."""
    token, token_hash = new_token()
    order = Order(
        order_number=new_order_number(),
        access_token_hash=token_hash,
        total_amount=new.amount,
        currency=new.currency,
        ticket_count=new.ticket_count,
        customer_email=new.customer.email,
        customer_first_name=new.customer.first_name,
        customer_last_name=new.customer.last_name,
        phone=new.phone,
    )
    db.session.add(order)
    db.session.commit()
    # Cached from the start, so a wait can still be authorized while the database is down.
    events.remember(order.to_json(), token_hash)
    log.info(
        "order %s created",
        order.order_number,
        extra=fields(
            event="order.created",
            order_id=order.id,
            order_number=order.order_number,
            amount=order.total_amount,
            email=mask_email(order.customer_email),
        ),
    )
    return order, token


@retry_if_died_while_pooled
def authorize(order_id: str, token: str | None) -> Order:
    """Load an order the token opens. Wrong token and unknown order look the same: 404."""
    reads.check_order_request(order_id, token)
    return reads.opened(order_id, token, lambda order_id: db.session.get(Order, order_id))


def expire_stale(older_than_seconds: int, limit: int = 500) -> int:
    """Expire orders still processing after `older_than_seconds`; their waiters are told.

    Each order is settled on its own, with the version check of every settlement: one that
    a webhook settles meanwhile is left as the webhook set it.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    stale = (
        db.session.execute(
            db.select(Order)
            .where(Order.payment_status == "processing", Order.created_at < cutoff)
            .order_by(Order.created_at)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    expired = 0
    for order in stale:
        order.settle("expired", reason="payment_timeout")
        try:
            db.session.commit()
        except StaleDataError:
            db.session.rollback()
            continue
        events.announce(order.to_json(), order.access_token_hash)
        expired += 1
    db.session.close()
    return expired
