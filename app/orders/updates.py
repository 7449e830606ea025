"""An order's updates for its streams (SSE and WebSocket): the buffered events a client
missed, then live ones, each version once and in order, until a terminal one."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

from flask import current_app

from app.realtime import Watch, current_hub
from app.realtime.connections import Connection
from app.realtime.hub import SHUTDOWN

from . import events, reads
from .models import TERMINAL_PAYMENT_STATUSES

# What an order's update stream yields besides order JSON.
IDLE = "idle"  # nothing happened for a heartbeat interval
GOING_AWAY = "going-away"  # the worker is stopping: the client reconnects elsewhere


def reconnect_delay_ms() -> int:
    """How long a client of a stopping worker should wait before it asks again: its own
    draw over SHUTDOWN_RECONNECT_WINDOW_MS, so that the clients do not all return at once."""
    return random.randint(0, current_app.config["SHUTDOWN_RECONNECT_WINDOW_MS"])


def order_updates(
    order_id: str,
    token: str | None,
    read_last_id: Callable[[], int | None],
    heartbeat: float,
) -> tuple[Watch, Callable[[Connection], Iterator[dict | str]]] | None:
    """Authorize and subscribe now; return the watch and the order's updates, or None when
    the order is settled and the client has its last event already (nothing will ever come).

    `read_last_id` reads the client's last event id from the request once the token has
    opened the order (credentials are checked before anything else of a request). The
    updates replay the buffered events newer than it (and the current state
    when the buffer does not reach it), then live events, each version once and in order,
    until a terminal one; IDLE after each quiet `heartbeat`, GOING_AWAY (and the end) when
    the worker stops. The watch is registered before the buffer is read, so nothing falls
    between. SSE and WebSocket routes frame the same updates.
    """
    reads.check_order_request(order_id, token)
    last_id = read_last_id()
    hub = current_hub()
    watch = hub.watch(events.channel(order_id))
    try:
        cached = None if hub.redis_down else reads.cached_order(order_id, token)
        current, _ = reads.current_order(order_id, token, cached)
        backlog = events.read_buffer(order_id)
    except BaseException:
        watch.close()
        raise
    if not backlog or backlog[-1]["version"] < current["version"]:
        backlog.append(current)  # the buffer expired, or Redis was away: send the truth
    newest = backlog[-1]
    if last_id is not None and last_id > newest["version"]:
        last_id = None  # not an id of this order's history: start from the beginning
    if newest["paymentStatus"] in TERMINAL_PAYMENT_STATUSES and (last_id or 0) >= newest["version"]:
        watch.close()
        return None

    def updates(connection: Connection) -> Iterator[dict | str]:
        sent = last_id if last_id is not None else 0

        def newer(order: dict) -> Iterator[dict]:
            nonlocal sent
            if order["version"] > sent:
                sent = order["version"]
                connection.last_status = order["paymentStatus"]
                yield order

        for order in backlog:
            yield from newer(order)
        state = backlog[-1]  # the newest known, never older than the current state
        # A settled order never changes again: nothing more will come.
        while state["paymentStatus"] not in TERMINAL_PAYMENT_STATUSES:
            delivery = watch.next(heartbeat)
            if delivery is None:
                yield IDLE
                continue
            if delivery.source == SHUTDOWN:
                yield GOING_AWAY
                return
            state = json.loads(delivery.data)
            yield from newer(state)

    return watch, updates
