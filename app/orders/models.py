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
TERMINAL_PAYMENT_STATUSES = frozenset(ORDER_STATUS_FOR) - {"processing"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat_utc(moment: datetime) -> str:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OrderIsFinal(Exception):
    """Raised when something tries to move an order out of a terminal state."""


class Order(db.Model):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid4()))
    order_number: Mapped[str] = mapped_column(String(32), unique=True)
    access_token_hash: Mapped[str] = mapped_column(String(64))
    payment_status: Mapped[str] = mapped_column(String(16), default="processing")
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
        if payment_status not in TERMINAL_PAYMENT_STATUSES:
            raise ValueError(f"not a terminal payment status: {payment_status}")
        now = utcnow()
        self.payment_status = payment_status
        self.status = ORDER_STATUS_FOR[payment_status]
        self.failure_reason = reason
        self.version += 1
        self.updated_at = now
        if payment_status == "completed":
            self.paid_at = now

    def to_json(self) -> dict:
        """The public order JSON of the HTTP contract."""
        return {
            "orderId": self.id,
            "orderNumber": self.order_number,
            "paymentStatus": self.payment_status,
            "status": self.status,
            "totalAmount": float(self.total_amount),
            "currency": self.currency,
            "ticketCount": self.ticket_count,
            "customer": {
                "email": self.customer_email,
                "firstName": self.customer_first_name,
                "lastName": self.customer_last_name,
            },
            "version": self.version,
            "failureReason": self.failure_reason,
            "updatedAt": isoformat_utc(self.updated_at),
        }
