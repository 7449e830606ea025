"""Reading an order for a request that carries its token: the cache, the database, or what
is known while the database is down. Shared by the wait and the order's update streams."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from uuid import UUID

from app import metrics
from app.database import retry_if_died_while_pooled
from app.errors import DATABASE_DOWN, NotFound, ServiceUnavailable, Unauthorized
from app.extensions import db
from app.logs import first_line

from . import events, statements
from .access import token_matches
from .models import Order, order_json

log = logging.getLogger(__name__)

# Ids per IN (...) query of the batched reads: far below SQLite's and PostgreSQL's limits.
POLL_CHUNK = 500


def is_order_id(value: str) -> bool:
    try:
        return str(UUID(value)) == value
    except ValueError:
        return False


def check_order_request(order_id: str, token: str | None) -> None:
    """What a request for an order tells wrong by itself, without a read: 401 or 404."""
    if not token:
        raise Unauthorized("order token required (Authorization: Bearer <token> or ?token=)")
    if not is_order_id(order_id):
        raise NotFound("order not found")


def opened(order_id: str, token: str, read: Callable):
    """What `read(order_id)` gives (an Order or a row), if the token opens that order.
    Wrong token and unknown order look the same: 404."""
    found = read(order_id)
    if found is None or not token_matches(token, found.access_token_hash):
        raise NotFound("order not found")
    return found


def cached_order(order_id: str, token: str) -> dict | None:
    """The cached order JSON, if any; a token that does not open it is a 404 right here."""
    cached = events.read_latest(order_id)
    if cached is None:
        return None
    order, token_hash = cached
    if not token_matches(token, token_hash):
        raise NotFound("order not found")
    return order


def current_order(order_id: str, token: str, known: dict | None) -> tuple[dict, str]:
    """The order from the database and "db", or `known` (already authorized) and "cache"
    when the database is down."""
    try:
        return order_json(opened(order_id, token, statements.read_order)), "db"
    except DATABASE_DOWN as exc:
        log.warning("database unavailable for a wait: %s", first_line(exc))
        if known is None:
            raise ServiceUnavailable(
                "database unavailable and no cached state of this order, retry shortly"
            ) from None
        return known, "cache"
    finally:
        db.session.remove()  # hand the connection back, and drop the session, before holding


@retry_if_died_while_pooled
def latest_versions(order_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Current (version, published message) of the given orders, in batched queries: the
    hub's fallback poll, and the final read of waits at their deadline."""
    latest = {}
    for chunk in _chunks(order_ids, POLL_CHUNK):
        metrics.fallback_queries.labels("orders").inc()
        for order in db.session.execute(db.select(Order).where(Order.id.in_(chunk))).scalars():
            latest[order.id] = (order.version, events.message(order))
    db.session.close()
    return latest


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
