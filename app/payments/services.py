"""Apply a verified callback to its order: one transaction, then one publish."""

import functools
import logging
from dataclasses import dataclass

from sqlalchemy import Update, bindparam, insert, update
from sqlalchemy.orm.exc import StaleDataError

from app import metrics
from app.errors import NotFound
from app.extensions import db
from app.logs import fields
from app.orders import events
from app.orders.models import PROCESSING, Order, order_json, settlement

from .models import PaymentEvent
from .schemas import Callback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    order: dict
    changed: bool
    duplicate: bool
    reason: str | None = None

    def to_json(self) -> dict:
        return {
            "success": True,
            "orderId": self.order["orderId"],
            "paymentStatus": self.order["paymentStatus"],
            "status": self.order["status"],
            "version": self.order["version"],
            "changed": self.changed,
            "duplicate": self.duplicate,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Receipt:
    """How a callback arrived: for the audit trail."""

    body_sha256: str
    remote_addr: str | None


def record_rejection(receipt: Receipt, reason: str, callback: Callback | None = None) -> None:
    """Audit a callback refused before it touched any order (bad signature, body, reference)."""
    db.session.rollback()
    db.session.add(_event(receipt, "rejected", reason, callback))
    db.session.commit()
    note_outcome("rejected", reason, order_number=callback.order_number if callback else None)


def note_outcome(outcome: str, reason: str | None = None, **details) -> None:
    """Count and log what became of a callback: accepted, duplicate, ignored, rejected or
    unavailable (the database was down; the provider retries)."""
    metrics.webhooks.labels(outcome).inc()
    log.info(
        "webhook %s%s",
        outcome,
        f": {reason}" if reason else "",
        extra=fields(event="webhook", outcome=outcome, reason=reason, **details),
    )


def _event(
    receipt: Receipt,
    outcome: str,
    reason: str | None,
    callback: Callback | None,
    order_id: str | None = None,
) -> PaymentEvent:
    return PaymentEvent(**_event_values(receipt, outcome, reason, callback, order_id))


def _event_values(receipt, outcome, reason, callback, order_id) -> dict:
    return {
        "outcome": outcome,
        "reason": reason,
        "order_number": callback.order_number if callback else None,
        "order_id": order_id,
        "result_code": callback.result_code if callback else None,
        "amount": callback.amount if callback else None,
        "body_sha256": receipt.body_sha256,
        "remote_addr": receipt.remote_addr,
    }


def apply_callback(callback: Callback, receipt: Receipt) -> Outcome:
    """Settle the order the callback names; a settled order is never changed again.

    Concurrent deliveries serialize on the row lock (PostgreSQL) and on the condition or
    version check of the UPDATE (everywhere): the first settles the order, the rest find it
    settled.
    """
    settled = _settle_at_once(callback, receipt)
    if settled is not None:
        return settled
    try:
        return _settle(callback, receipt)
    except StaleDataError:
        db.session.rollback()  # another delivery settled it between our read and write
        return _settle(callback, receipt)


def _settle_at_once(callback: Callback, receipt: Receipt) -> Outcome | None:
    """The common case without reading the order first: one UPDATE of an order still
    processing (paid the right amount, when paid) and the audit row, in one transaction.
    None when no such order matched: the callback then needs the order read (_settle).

    Under load this is most of what a worker does per payment. Statements built once, with
    bound parameters, skip the ORM's read-modify-flush and SQLAlchemy's per-call statement
    building and cache-key generation, which cost more than the database round trips."""
    paid = callback.payment_status == "completed"
    values = {
        f"new_{column}": value for column, value in settlement(callback.payment_status).items()
    }
    row = db.session.execute(
        _settle_statement(check_amount=paid),
        {
            "number": callback.order_number,
            "amount": callback.amount,
            "new_mpesa_receipt": callback.receipt,
            "new_checkout_request_id": callback.checkout_request_id,
            **values,
        },
    ).one_or_none()
    if row is None:
        return None  # the transaction goes on in _settle, which reads the order
    db.session.execute(_AUDIT_INSERT, _event_values(receipt, "accepted", None, callback, row.id))
    db.session.commit()
    return _accepted(order_json(row), row.access_token_hash, None)


_AUDIT_INSERT = insert(PaymentEvent.__table__)


@functools.cache
def _settle_statement(*, check_amount: bool) -> Update:
    orders = Order.__table__
    matches = [orders.c.order_number == bindparam("number"), orders.c.payment_status == PROCESSING]
    if check_amount:
        matches.append(orders.c.total_amount == bindparam("amount"))
    changed = [*settlement("completed"), "mpesa_receipt", "checkout_request_id"]
    return (
        update(orders)
        .where(*matches)
        .values({column: bindparam(f"new_{column}") for column in changed})
        .values(version=orders.c.version + 1)
        .returning(*orders.c)
    )


def _settle(callback: Callback, receipt: Receipt) -> Outcome:
    order = db.session.execute(
        db.select(Order).where(Order.order_number == callback.order_number).with_for_update()
    ).scalar_one_or_none()
    if order is None:
        record_rejection(receipt, "unknown order reference", callback)
        raise NotFound("unknown order reference")

    target, reason = callback.payment_status, None
    if target == "completed" and callback.amount != order.total_amount:
        # A payment of the wrong amount never marks the order paid; it needs reconciliation.
        target, reason = "failed", "amount_mismatch"

    if order.is_terminal:
        current = order.to_json()
        db.session.rollback()
        duplicate = (current["paymentStatus"], current["failureReason"]) == (target, reason)
        ignored = None if duplicate else f"order already {current['paymentStatus']}"
        db.session.add(
            _event(
                receipt,
                "duplicate" if duplicate else "ignored",
                ignored,
                callback,
                current["orderId"],
            )
        )
        db.session.commit()
        note_outcome(
            "duplicate" if duplicate else "ignored",
            ignored,
            order_number=current["orderNumber"],
            payment_status=current["paymentStatus"],
            version=current["version"],
        )
        return Outcome(current, changed=False, duplicate=duplicate, reason=ignored)

    order.settle(target, reason=reason)
    order.mpesa_receipt = callback.receipt
    order.checkout_request_id = callback.checkout_request_id
    # In the settlement's own transaction: the audit never disagrees with the order.
    db.session.add(_event(receipt, "accepted", reason, callback, order.id))
    db.session.commit()

    return _accepted(order.to_json(), order.access_token_hash, reason)


def _accepted(settled: dict, token_hash: str, reason: str | None) -> Outcome:
    events.announce(settled, token_hash)  # after commit: it wakes the waiters
    note_outcome(
        "accepted",
        reason,
        order_number=settled["orderNumber"],
        payment_status=settled["paymentStatus"],
        version=settled["version"],
    )
    return Outcome(settled, changed=True, duplicate=False, reason=reason)
