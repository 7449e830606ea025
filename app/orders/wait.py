"""The long-poll wait for an order, from the request to its answer.

A wait knows orders, versions and tokens, and nothing of how it is held: the long-poll
transport (app/realtime/longpoll.py) watches its channel, calls `open` once, offers it
every delivery through `answer`, and `finish`es it at its deadline or when the worker stops.

The transport watches the channel BEFORE `open` reads any state, so a change committed after
the read is delivered to `answer`. While held, a wait holds no database connection; with
the database down it carries on from the cached state, and only fails when there is none.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime

from app import metrics
from app.errors import DATABASE_DOWN
from app.extensions import db
from app.logs import fields
from app.realtime.connections import Connection, registry
from app.realtime.hub import SHUTDOWN, Delivery

from . import events, limits, reads
from .models import TERMINAL_PAYMENT_STATUSES
from .updates import reconnect_delay_ms

log = logging.getLogger(__name__)

TIMEOUT = "timeout"


def is_news(order_json: dict, since: int) -> bool:
    return order_json["version"] > since or order_json["paymentStatus"] in TERMINAL_PAYMENT_STATUSES


def answer_body(order_json: dict, since: int, source: str) -> dict:
    return {**order_json, "changed": order_json["version"] > since, "source": source}


class Wait:
    """One wait: answers as soon as its order moves past `since` (or is settled), else at
    its deadline with the order as the database has it then.

    Answers are the order plus `changed` and `source`: cache, db, redis, poll, timeout or
    shutdown. A wait that is going to be held needs a slot for its client address and one
    for its order (429 when either holds its limit already).
    """

    __slots__ = ("order_id", "token", "since", "client", "started", "deadline", "known")
    __slots__ += ("body", "received", "connection", "slots")

    def __init__(self, order_id, token, since, timeout_ms: int, client: str, started=None):
        reads.check_order_request(order_id, token)  # 401 and 404 told by the request alone
        self.order_id: str = order_id
        self.token: str = token
        self.since: int | None = since
        self.client = client
        self.started: float = time.monotonic() if started is None else started
        self.deadline: float = self.started + timeout_ms / 1000
        self.known: str | None = None  # the order as last read, while held
        self.body: dict | None = None  # the answer, once there is one
        self.received: float | None = None  # when the hub got the delivery that answered
        self.connection: Connection | None = None  # its place in the registry
        self.slots: tuple = ()  # leases of its limits, while held

    @property
    def channel(self) -> str:
        return events.channel(self.order_id)

    def open(self, *, use_cache: bool) -> dict | None:
        """Read the order (the cache first when `use_cache`): the answer now, or None when
        the wait is to be held (its slots taken)."""
        self.connection = registry.open("wait", self.order_id)
        cached = reads.cached_order(self.order_id, self.token) if use_cache else None
        if self.since is not None and cached is not None and is_news(cached, self.since):
            return self._answered(answer_body(cached, self.since, "cache"))
        current, source = reads.current_order(self.order_id, self.token, cached)
        if self.since is None:
            self.since = current["version"]
        if is_news(current, self.since):
            return self._answered(answer_body(current, self.since, source))
        if time.monotonic() >= self.deadline:  # timeout=0, or it queued that long: as of now
            return self._answered(answer_body(current, self.since, TIMEOUT))
        self.slots = limits.take_wait_slots(self.client, self.order_id)
        # Held from here on, by the thousand: keep nothing it no longer needs.
        self.token = self.client = None
        # While held, keep what we know as one string: a held wait's memory is mostly what
        # it keeps alive. Interned: the waits of one order share one copy, freed with the
        # last of them (tests/unit/test_interning.py: not so on CPython 3.12).
        self.known = sys.intern(events.encode(current))
        log.info(
            "wait held",
            extra=fields(event="wait.started", order_id=self.order_id, since=self.since),
        )
        return None

    def answer(self, delivery: Delivery, memo: dict) -> dict | None:
        """The answer if `delivery` is news to this wait, else None (keep holding). `memo`
        is shared by every wait the delivery is offered to: every wait of a fan-out with
        the same `since` gets the same body."""
        published = memo.get("order")
        if published is None:
            published = memo["order"] = json.loads(delivery.data)
        if not is_news(published, self.since):
            return None
        self.received = delivery.received
        body = memo.get(self.since)
        if body is None:
            body = memo[self.since] = answer_body(published, self.since, delivery.source)
        return self._answered(body)

    @staticmethod
    def finish(waits: list[Wait], reason: str) -> list[dict]:
        """The answers of waits whose deadline passed (TIMEOUT) or whose worker stops
        (SHUTDOWN): the database is the truth, read for all of them at once (or what each
        knows while it is down)."""
        try:
            latest = {
                order_id: json.loads(message)
                for order_id, (_, message) in reads.latest_versions(
                    [w.order_id for w in waits]
                ).items()
            }
        except DATABASE_DOWN:
            db.session.remove()
            latest = {}
        if reason != SHUTDOWN:
            return [wait._answered(wait._final(latest, TIMEOUT)) for wait in waits]
        return [
            wait._answered({**wait._final(latest, SHUTDOWN), "retryInMs": reconnect_delay_ms()})
            for wait in waits
        ]

    def _final(self, latest: dict, source: str) -> dict:
        return answer_body(latest.get(self.order_id) or json.loads(self.known), self.since, source)

    def close(self, written_at: float | None = None) -> None:
        """Give back what the wait holds; count and log its answer once it was sent (at
        `written_at`, by time.monotonic(), when earlier than now)."""
        if self.connection is not None:
            registry.close(self.connection)
        limits.give_back_wait_slots(self.slots)
        self.connection, self.slots, self.known = None, (), None
        if self.body is not None:
            self._count(time.monotonic() if written_at is None else written_at)

    def _answered(self, body: dict) -> dict:
        self.body = body
        return body

    def _count(self, now: float) -> None:
        body = self.body
        source = body["source"]
        metrics.waits_answered.labels(source).inc()
        if self.received is not None:
            metrics.dispatch_seconds.labels(source).observe(now - self.received)
            if body["changed"]:
                committed = datetime.fromisoformat(body["updatedAt"]).timestamp()
                written = time.time() - (time.monotonic() - now)  # the wall clock at `now`
                metrics.delivery_seconds.labels(source).observe(max(written - committed, 0))
        log.info(
            "wait answered by %s",
            source,
            extra=fields(
                event="wait.answered",
                order_id=self.order_id,
                source=source,
                changed=body["changed"],
                version=body["version"],
                duration_ms=round((now - self.started) * 1000, 1),
            ),
        )
