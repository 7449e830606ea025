"""The common settlement in as few database round trips as the database allows.

A callback for an order still processing (paid the right amount, when it is a payment)
needs no read of the order first: one UPDATE ... RETURNING settles it, and its audit row goes
in with it. On PostgreSQL the two are one statement (the UPDATE and the INSERT as CTEs) run
in autocommit: one round trip, where the ORM took five (BEGIN, SELECT ... FOR UPDATE,
UPDATE, INSERT, COMMIT), straight on the driver (app/driver_statement.py). Elsewhere (SQLite)
they are two statements and a commit.

The statements are built once, with bound parameters: building and cache-keying a statement
per call, and the ORM's unit of work, cost a worker more CPU than the round trips did.
Concurrent deliveries for one order serialize on its row: the first settles it, and the
UPDATE of the others matches nothing (PostgreSQL checks the WHERE again after the lock).
"""

import functools

from sqlalchemy import Row, Select, Update, bindparam, cast, insert, select, update

from app.driver_statement import on_driver
from app.extensions import db
from app.orders.models import PROCESSING, Order, settlement, utcnow

from .models import PaymentEvent
from .schemas import Callback

# The audit row's columns besides the order id, which comes from the settled order.
AUDIT_COLUMNS = (
    "received_at",
    "outcome",
    "reason",
    "order_number",
    "result_code",
    "amount",
    "body_sha256",
    "remote_addr",
)


def settle_if_processing(callback: Callback, audit: dict) -> Row | tuple | None:
    """Settle the order `callback` names, if it is still processing and, for a payment, its
    total is the amount paid, and write the `audit` row (AUDIT_COLUMNS but received_at) in
    the same transaction. Returns the settled order's row, or None having changed nothing:
    the callback then needs the order read first."""
    check_amount = callback.payment_status == "completed"
    params = {
        "number": callback.order_number,
        "amount": callback.amount,
        "new_mpesa_receipt": callback.receipt,
        "new_checkout_request_id": callback.checkout_request_id,
        **{f"new_{name}": value for name, value in settlement(callback.payment_status).items()},
    }
    audit = {**audit, "received_at": utcnow()}
    if db.engine.dialect.name == "postgresql":
        params.update({f"audit_{name}": audit[name] for name in AUDIT_COLUMNS})
        return on_driver(db.engine, _settle_and_audit(check_amount)).one_or_none(params)
    row = db.session.execute(_settle(check_amount), params).one_or_none()
    if row is not None:
        db.session.execute(_AUDIT_INSERT, {**audit, "order_id": row.id})
        db.session.commit()
    return row


_AUDIT_INSERT = insert(PaymentEvent.__table__)


@functools.cache
def _settle(check_amount: bool) -> Update:
    orders = Order.__table__
    matches = [orders.c.order_number == bindparam("number"), orders.c.payment_status == PROCESSING]
    if check_amount:
        matches.append(orders.c.total_amount == bindparam("amount"))
    changed = [*settlement("completed"), "mpesa_receipt", "checkout_request_id"]
    return (
        update(orders)
        .where(*matches)
        .values({name: bindparam(f"new_{name}") for name in changed})
        .values(version=orders.c.version + 1)
        .returning(*orders.c)
    )


@functools.cache
def _settle_and_audit(check_amount: bool) -> Select:
    """PostgreSQL: the UPDATE and the audit INSERT in one statement, which is atomic."""
    settled = _settle(check_amount).cte("settled")
    events = PaymentEvent.__table__
    # Typed parameters: in an INSERT ... SELECT, PostgreSQL does not infer them.
    values = [cast(bindparam(f"audit_{name}"), events.c[name].type) for name in AUDIT_COLUMNS]
    audit = insert(events).from_select(
        [*AUDIT_COLUMNS, "order_id"], select(*values, settled.c.id), include_defaults=False
    )
    return select(settled).add_cte(audit.cte("audit"))
