"""How many waits may be held at once: per client address and per order, across workers
(leases in Redis, app/realtime/connections.py)."""

from __future__ import annotations

from uuid import uuid4

from flask import current_app

from app.errors import TooManyRequests
from app.realtime.connections import WORKER_ID

WAIT_RETRY_AFTER_S = 5


def take_wait_slots(client: str, order_id: str) -> tuple:
    """One slot per client address and one per order while a wait is held, or 429."""
    per_client, per_order = current_app.extensions["wait_limits"]
    if not (per_client.limit or per_order.limit):
        return ()  # nothing counted, nothing held: a held wait keeps no lease
    taken: list = []
    # Named by its worker, like a stream's lease: a lease left by a worker that died shows whose.
    lease_id = f"{WORKER_ID}:{uuid4().hex}"
    try:
        for limiter, owner, whose in (
            (per_client, client, "this address"),
            (per_order, order_id, "this order"),
        ):
            if not limiter.limit:
                continue
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
    return tuple(taken)


def give_back_wait_slots(slots: tuple | list) -> None:
    for limiter, owner, lease in slots:
        limiter.release(owner, lease)
