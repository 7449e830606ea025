"""The wait's read of its order in one prebuilt statement, without the ORM.

Every wait reads its order once, to authorize it and to learn its state. Under a burst of
waits the ORM's session, identity map and teardown cost the worker more CPU than the read
itself. On PostgreSQL the statement runs straight on the driver, in autocommit
(app/driver_statement.py); elsewhere (SQLite) through SQLAlchemy Core.
"""

from sqlalchemy import Row, bindparam, select

from app.database import retry_if_died_while_pooled
from app.driver_statement import on_driver
from app.extensions import db

from .models import Order

# What the order's JSON (order_json) and its token check need.
READ_COLUMNS = (
    "id",
    "order_number",
    "access_token_hash",
    "payment_status",
    "status",
    "total_amount",
    "currency",
    "ticket_count",
    "customer_email",
    "customer_first_name",
    "customer_last_name",
    "version",
    "failure_reason",
    "mpesa_receipt",
    "updated_at",
)

_orders = Order.__table__
_READ = select(*(_orders.c[name] for name in READ_COLUMNS)).where(_orders.c.id == bindparam("id"))


@retry_if_died_while_pooled
def read_order(order_id: str) -> Row | tuple | None:
    """The order's READ_COLUMNS, or None when there is no such order."""
    engine = db.engine
    if engine.dialect.name == "postgresql":
        return on_driver(engine, _READ).one_or_none({"id": order_id})
    return db.session.execute(_READ, {"id": order_id}).one_or_none()
