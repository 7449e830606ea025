"""How many waits may be held at once: per client address and per order, across workers
(leases in Redis, app/realtime/connections.py)."""

from __future__ import annotations

from uuid import uuid4

from flask import current_app

from app.errors import TooManyRequests
from app.realtime.connections import WORKER_ID

WAIT_RETRY_AFTER_S = 5


def take_wait_slots(client: str, order_id: str) -> list:
    """One slot per client address and one per order while a wait is held, or 429."""
    per_client, per_order = current_app.extensions["wait_limits"]
    # Named by its worker, like a stream's lease: a lease left by a worker that died shows whose.
    lease_id = f"{WORKER_ID}:{uuid4().hex}"
    taken: list = []
    try:
        for limiter, owner, whose in (
            (per_client, client, "this address"),
            (per_order, order_id, "this order"),
        ):
            lease = limiter.acquire(owner, lease_id)
            if lease is None:
                raise TooManyRequests(
                    f"too many waits held for {whose} (at most {limiter.limit}); retry shortly",
                    retry_after=WAIT_RETRY_AFTER_S,
                )
            taken.append((limiter, owner, lease))
    except BaseException:
        give_back_wait_slots(taken)
        raise
    return taken


def give_back_wait_slots(slots: list) -> None:
    for limiter, owner, lease in slots:
        limiter.release(owner, lease)
