"""The order: its columns and the one invariant that matters, a terminal state is final."""

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

from sqlalchemy import DateTime, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db

# paymentStatus -> order status; every paymentStatus but "processing" is terminal.
ORDER_STATUS_FOR = {
    "processing": "pending",
    "completed": "paid",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
PROCESSING = "processing"  # the one payment status an order leaves
TERMINAL_PAYMENT_STATUSES = frozenset(ORDER_STATUS_FOR) - {PROCESSING}


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat_utc(moment: datetime) -> str:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def settlement(payment_status: str, *, reason: str | None = None) -> dict:
    """The columns a move to a terminal payment status sets, the version bump aside."""
    if payment_status not in TERMINAL_PAYMENT_STATUSES:
        raise ValueError(f"not a terminal payment status: {payment_status}")
    now = utcnow()
    return {
        "payment_status": payment_status,
        "status": ORDER_STATUS_FOR[payment_status],
        "failure_reason": reason,
        "updated_at": now,
        "paid_at": now if payment_status == "completed" else None,
    }


def order_json(order) -> dict:
    """The public order JSON of the HTTP contract, from an Order or a row of `orders`."""
    return {
        "orderId": order.id,
        "orderNumber": order.order_number,
        "paymentStatus": order.payment_status,
        "status": order.status,
        "totalAmount": float(order.total_amount),
        "currency": order.currency,
        "ticketCount": order.ticket_count,
        "customer": {
            "email": order.customer_email,
            "firstName": order.customer_first_name,
            "lastName": order.customer_last_name,
        },
        "version": order.version,
        "failureReason": order.failure_reason,
        "mpesaReceipt": order.mpesa_receipt,
        "updatedAt": isoformat_utc(order.updated_at),
    }


class OrderIsFinal(Exception):
    """Raised when something tries to move an order out of a terminal state."""


class Order(db.Model):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid4()))
    order_number: Mapped[str] = mapped_column(String(32), unique=True)
    access_token_hash: Mapped[str] = mapped_column(String(64))
    payment_status: Mapped[str] = mapped_column(String(16), default=PROCESSING)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    total_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3), default="KES")
    ticket_count: Mapped[int] = mapped_column(Integer, default=1)
    customer_email: Mapped[str] = mapped_column(String(254))
    customer_first_name: Mapped[str] = mapped_column(String(100))
    customer_last_name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=1)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    mpesa_receipt: Mapped[str | None] = mapped_column(String(64))
    checkout_request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Every UPDATE also says `WHERE version = <the version read>`: of two writers that read
    # the same version, the second updates nothing and gets StaleDataError. That is what
    # keeps a settled order settled where SELECT ... FOR UPDATE is a no-op (SQLite).
    # settle() bumps the version itself, hence no generator.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}

    @property
    def is_terminal(self) -> bool:
        return self.payment_status in TERMINAL_PAYMENT_STATUSES

    def settle(self, payment_status: str, *, reason: str | None = None) -> None:
        """Move to a terminal payment status, bumping the version once."""
        if self.is_terminal:
            raise OrderIsFinal(self.payment_status)
        for column, value in settlement(payment_status, reason=reason).items():
            setattr(self, column, value)
        self.version += 1

    def to_json(self) -> dict:
        return order_json(self)
