"""Provider callbacks: verify, settle the order in one transaction, then publish once."""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from app import metrics
from app.database import retry_if_died_while_pooled
from app.errors import DATABASE_DOWN, NotFound, Unauthorized, ValidationError
from app.extensions import db
from app.logs import fields
from app.orders import events
from app.orders.models import Order, order_json
from app.orders.signals import callback_received
from app.security import BodyTooLarge
from app.validation import parse_json

from . import signature, statements
from .models import PaymentEvent
from .schemas import Callback, parse_callback

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


def receive(
    read_body: Callable[[], bytes], signature_header: str | None, remote_addr: str | None
) -> Outcome:
    """Take one provider callback as it arrives: read its body (BodyTooLarge over the limit),
    check its signature and body, settle its order, and count and audit what became of it."""
    app = current_app._get_current_object()
    # Counted before the order changes, so it is counted before the change is announced.
    callback_received.send(app, outcome="received")
    try:
        body = _read(read_body, remote_addr)
        receipt = Receipt(hashlib.sha256(body).hexdigest(), remote_addr)
        outcome = _verify_and_apply(body, signature_header, receipt, app.config["WEBHOOK_SECRET"])
    except (BodyTooLarge, Unauthorized, ValidationError, NotFound):
        callback_received.send(app, outcome="rejected")
        raise
    except DATABASE_DOWN:
        note_outcome("unavailable", "database unavailable")
        raise  # 503: the provider retries
    if outcome.duplicate:
        callback_received.send(app, outcome="duplicate")
    return outcome


def _read(read_body: Callable[[], bytes], remote_addr: str | None) -> bytes:
    """The body; one over the limit is audited before its 413. body_sha256 is required, and
    only the body's first limit + 1 bytes were read (none when its Content-Length was over
    the limit): it is the hash of those, as the reason says."""
    try:
        return read_body()
    except BodyTooLarge as too_large:
        limit, read = too_large.limit, too_large.read
        if too_large.announced is None:
            reason = f"body too large: over {limit} bytes; body_sha256 is of its first {len(read)}"
        else:
            reason = (
                f"body too large: Content-Length {too_large.announced} over {limit} bytes; "
                "none read, body_sha256 is of no bytes"
            )
        record_rejection(Receipt(hashlib.sha256(read).hexdigest(), remote_addr), reason)
        raise


def _verify_and_apply(body: bytes, signature_header, receipt: Receipt, secret: str) -> Outcome:
    if not signature.is_valid(body, signature_header, secret):
        record_rejection(receipt, "missing or invalid signature")
        raise Unauthorized("missing or invalid webhook signature")
    try:
        callback = parse_callback(parse_json(body))
    except ValidationError as error:
        record_rejection(receipt, error.message)
        raise
    return apply_callback(callback, receipt)


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


@retry_if_died_while_pooled
def apply_callback(callback: Callback, receipt: Receipt) -> Outcome:
    """Settle the order the callback names; a settled order is never changed again.

    Concurrent deliveries serialize on the row lock (PostgreSQL) and on the condition or
    version check of the UPDATE (everywhere): the first settles the order, the rest find it
    settled.

    Run once more when a connection turns out to have died while pooled: the statement that
    failed was the first of its checkout. The settlement on PostgreSQL is one statement in
    autocommit; had it committed before its connection broke, the second run finds the order
    settled (a duplicate), as the provider's own retry would.
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
    """The common case, without reading the order first (see statements.py); None when the
    callback needs the order read (_settle)."""
    audit = _event_values(receipt, "accepted", None, callback, None)
    row = statements.settle_if_processing(callback, audit)
    if row is None:
        return None
    return _accepted(order_json(row), row.access_token_hash, None)


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
