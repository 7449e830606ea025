"""Apply a verified callback to its order: one transaction, then one publish."""

import logging
from dataclasses import dataclass

from sqlalchemy.orm.exc import StaleDataError

from app.errors import NotFound
from app.extensions import db
from app.orders import events
from app.orders.models import Order

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


def apply_callback(callback: Callback) -> Outcome:
    """Settle the order the callback names; a settled order is never changed again.

    Concurrent deliveries serialize on the row lock (PostgreSQL) and on the version check
    of the UPDATE (everywhere): the first settles the order, the rest find it settled.
    """
    try:
        return _settle(callback)
    except StaleDataError:
        db.session.rollback()  # another delivery settled it between our read and write
        return _settle(callback)


def _settle(callback: Callback) -> Outcome:
    order = db.session.execute(
        db.select(Order).where(Order.order_number == callback.order_number).with_for_update()
    ).scalar_one_or_none()
    if order is None:
        db.session.rollback()
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
        log.info("callback for %s ignored: %s", current["orderNumber"], ignored or "duplicate")
        return Outcome(current, changed=False, duplicate=duplicate, reason=ignored)

    order.settle(target, reason=reason)
    order.mpesa_receipt = callback.receipt
    order.checkout_request_id = callback.checkout_request_id
    db.session.commit()

    settled = order.to_json()
    events.announce(settled, order.access_token_hash)  # after commit: it wakes the waiters
    log.info(
        "order %s settled: %s (version %d)", settled["orderNumber"], target, settled["version"]
    )
    return Outcome(settled, changed=True, duplicate=False, reason=reason)
