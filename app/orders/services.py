"""Order use cases: create, read with a token, and the long-poll wait."""

import json
import logging
import secrets
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from app import metrics
from app.errors import (
    DATABASE_DOWN,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from app.extensions import db
from app.logs import fields, first_line, mask_email
from app.realtime import Watch, current_hub, registry
from app.realtime.connections import Connection
from app.realtime.hub import SHUTDOWN
from app.validation import integer_param

from . import events, statements
from .access import new_token, token_matches
from .models import TERMINAL_PAYMENT_STATUSES, Order, order_json, utcnow
from .schemas import NewOrder

log = logging.getLogger(__name__)

_ORDER_NUMBER_ALPHABET = string.ascii_uppercase + string.digits
# Ids per IN (...) query of the fallback poll: far below SQLite's and PostgreSQL's limits.
POLL_CHUNK = 500
WAIT_RETRY_AFTER_S = 5


def is_order_id(value: str) -> bool:
    try:
        return str(UUID(value)) == value
    except ValueError:
        return False


def new_order_number() -> str:
    suffix = "".join(secrets.choice(_ORDER_NUMBER_ALPHABET) for _ in range(6))
    return f"ORD-{int(time.time() * 1000)}-{suffix}"


def create_order(new: NewOrder) -> tuple[Order, str]:
    """Create a pending order; returns it with its access token (shown to the customer once)."""
    token, token_hash = new_token()
    order = Order(
        order_number=new_order_number(),
        access_token_hash=token_hash,
        total_amount=new.amount,
        currency=new.currency,
        ticket_count=new.ticket_count,
        customer_email=new.email,
        customer_first_name=new.first_name,
        customer_last_name=new.last_name,
        phone=new.phone,
    )
    db.session.add(order)
    db.session.commit()
    # Cached from the start, so a wait can still be authorized while the database is down.
    events.remember(order.to_json(), token_hash)
    log.info(
        "order %s created",
        order.order_number,
        extra=fields(
            event="order.created",
            order_id=order.id,
            order_number=order.order_number,
            amount=order.total_amount,
            email=mask_email(order.customer_email),
        ),
    )
    return order, token


def authorize(order_id: str, token: str | None) -> Order:
    """Load an order the token opens. Wrong token and unknown order look the same: 404."""
    check_order_request(order_id, token)
    return _opened(order_id, token, lambda order_id: db.session.get(Order, order_id))


def _opened(order_id: str, token: str, read: Callable):
    """What `read(order_id)` gives (an Order or a row), if the token opens that order; for
    a request check_order_request passed."""
    found = read(order_id)
    if found is None or not token_matches(token, found.access_token_hash):
        raise NotFound("order not found")
    return found


def check_order_request(order_id: str, token: str | None) -> None:
    """What a request for an order tells wrong by itself, without a read: 401 or 404."""
    if not token:
        raise Unauthorized("order token required (Authorization: Bearer <token> or ?token=)")
    if not is_order_id(order_id):
        raise NotFound("order not found")


def is_news(order_json: dict, since: int) -> bool:
    return order_json["version"] > since or order_json["paymentStatus"] in TERMINAL_PAYMENT_STATUSES


@dataclass(slots=True)
class WaitAnswer:
    """A wait's answer, and what its metrics and log line need once it was written."""

    body: dict
    order_id: str
    started: float  # time.monotonic() when the wait began
    received: float | None = None  # when the hub got the delivery that answered, if one did
    connection: Connection | None = None  # its place in the registry while held

    def written(self, at: float | None = None) -> None:
        """Count and log the answer: call once it was sent to the client (at `at`, by
        time.monotonic(), when that was earlier than now)."""
        now = time.monotonic() if at is None else at
        source = self.body["source"]
        metrics.waits_answered.labels(source).inc()
        if self.received is not None:
            metrics.dispatch_seconds.labels(source).observe(now - self.received)
            if self.body["changed"]:
                committed = datetime.fromisoformat(self.body["updatedAt"]).timestamp()
                written = time.time() - (time.monotonic() - now)  # the wall clock at `now`
                metrics.delivery_seconds.labels(source).observe(max(written - committed, 0))
        log.info(
            "wait answered by %s",
            source,
            extra=fields(
                event="wait.answered",
                order_id=self.order_id,
                source=source,
                changed=self.body["changed"],
                version=self.body["version"],
                duration_ms=round((now - self.started) * 1000, 1),
            ),
        )


def answer_body(order_json: dict, since: int, source: str) -> dict:
    return {**order_json, "changed": order_json["version"] > since, "source": source}


# Parks a wait that is about to block: (answer, since, known state as JSON, wait slots,
# deadline, watch) -> True once parked (whoever parked it answers it later, then calls
# release_parked_wait), or False when a delivery pending on the watch answered it at once
# (answer.body is set).
Park = Callable[["WaitAnswer", int, str, list, float, Watch], bool]


def wait_for_update(
    order_id: str,
    token: str | None,
    since: int | None,
    timeout_ms: int,
    client: str = "-",
    park: Park | None = None,
    *,
    started: float | None = None,
    turn: AbstractContextManager | None = None,
) -> WaitAnswer | None:
    """Answer as soon as the order moves past `since` (or is terminal), else after the timeout.

    The waiter registers with the hub BEFORE reading any state, so a change committed after
    the read is delivered by the hub; while blocked it holds no database connection. With the
    database down it carries on from the cached state, and only fails when there is none.
    A wait that is going to block needs a slot for its `client` address and for its order
    (429 when either holds its limit already). With `park`, a wait that would block is handed
    over to it instead, and None is returned.

    `started` (time.monotonic()) is when the client asked, if earlier than now: the timeout
    counts from then. `turn` is the wait's turn of `wait_openings` (by default it takes one
    of its own): a wait that queued for one comes with it (app/realtime/turns.py).
    """
    check_order_request(order_id, token)
    hub = current_hub()
    answer = WaitAnswer({}, order_id, time.monotonic() if started is None else started)
    answer.connection = registry.open("wait", order_id)
    deadline = answer.started + timeout_ms / 1000
    if turn is None:
        turn = current_app.extensions["wait_openings"]
    body = None
    try:
        body = _wait(hub, answer, token, since, deadline, client, park, turn)
    finally:
        if body is not PARKED:
            registry.close(answer.connection)
    if body is PARKED:
        return None
    answer.body = body
    return answer


def release_parked_wait(answer: "WaitAnswer", slots: list) -> None:
    """What a parked wait holds, given back once it was answered."""
    registry.close(answer.connection)
    give_back_wait_slots(slots)


def final_answers(parked: list[tuple[str, int, str]], source: str) -> list[dict]:
    """Answers of parked waits (order id, since, known state as JSON) at their deadline or at
    shutdown: the database is the truth, read for all of them at once (or what we know)."""
    try:
        latest = {
            order_id: json.loads(message)
            for order_id, (_, message) in latest_versions([p[0] for p in parked]).items()
        }
    except DATABASE_DOWN:
        db.session.remove()
        latest = {}
    return [
        answer_body(latest.get(order_id) or json.loads(known), since, source)
        for order_id, since, known in parked
    ]


@contextmanager
def _held_wait_slots(client: str, order_id: str) -> Iterator[None]:
    slots = take_wait_slots(client, order_id)
    try:
        yield
    finally:
        give_back_wait_slots(slots)


def take_wait_slots(client: str, order_id: str) -> list:
    """One slot per client address and one per order while a wait is held, or 429."""
    per_client, per_order = current_app.extensions["wait_limits"]
    lease_id = uuid4().hex
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


PARKED = object()  # _wait's result for a wait handed over to `park`


def _wait(
    hub,
    answer: WaitAnswer,
    token: str,
    since: int | None,
    deadline: float,
    client: str,
    park: Park | None,
    turn: AbstractContextManager,
) -> dict | object:
    order_id = answer.order_id
    # A turn to subscribe and read the state (and another for the final read): the database
    # and Redis pools are shared by every request of the worker, and a burst of waits must
    # queue here, not there.
    with ExitStack() as opening:
        opening.enter_context(turn)
        with hub.watch(events.channel(order_id)) as watch:
            cached = None if hub.redis_down else _cached_order(order_id, token)
            if since is not None and cached is not None and is_news(cached, since):
                return answer_body(cached, since, "cache")

            current, source = _current_order(order_id, token, cached)
            if since is None:
                since = current["version"]
            if is_news(current, since):
                return answer_body(current, since, source)
            # While blocked, keep what we know as one string, not two decoded orders: a held
            # wait's memory is mostly what its frames keep alive.
            known, cached, current = events.encode(current), None, None
            opening.close()  # the turn ends here; the watch goes on
            held = _hold(hub, answer, watch, since, known, deadline, client, park)
            if held is not None:
                return held

    # Timed out: the database is the truth, read it once more (or keep what we know).
    # A stopping worker answers "shutdown" instead, early or not: the client asks again at
    # once, and reaches a worker that is not stopping.
    with turn:
        final, _ = _current_order(order_id, token, known)
    return answer_body(final, since, SHUTDOWN if hub.closing else "timeout")


def _hold(
    hub, answer: WaitAnswer, watch: Watch, since: int, known: str, deadline, client, park
) -> dict | object | None:
    """Park the wait, or block its greenlet on the watch: its answer, PARKED, or None at the
    deadline."""
    order_id = answer.order_id
    if park is not None and not hub.closing:
        slots = take_wait_slots(client, order_id)
        _log_held(order_id, since)
        try:
            if park(answer, since, known, slots, deadline, watch):
                return PARKED
        except BaseException:
            give_back_wait_slots(slots)
            raise
        give_back_wait_slots(slots)
        return answer.body  # a delivery pending on the watch answered it

    with _held_wait_slots(client, order_id):
        _log_held(order_id, since)
        while not hub.closing and (remaining := deadline - time.monotonic()) > 0:
            delivery = watch.next(remaining)
            if delivery is None or delivery.source == SHUTDOWN:
                break
            published = json.loads(delivery.data)
            if is_news(published, since):
                answer.received = delivery.received
                return answer_body(published, since, delivery.source)
    return None


def _log_held(order_id: str, since: int) -> None:
    log.info("wait held", extra=fields(event="wait.started", order_id=order_id, since=since))


# What an order's update stream yields besides order JSON.
IDLE = "idle"  # nothing happened for a heartbeat interval
GOING_AWAY = "going-away"  # the worker is stopping: the client reconnects elsewhere


def order_updates(
    order_id: str, token: str | None, last_event_id: str | None, heartbeat: float
) -> tuple[Watch, Callable[[Connection], Iterator[dict | str]]] | None:
    """Authorize and subscribe now; return the watch and the order's updates, or None when
    the order is settled and the client has its last event already (nothing will ever come).

    The updates replay the buffered events newer than `last_event_id` (and the current state
    when the buffer does not reach it), then live events, each version once and in order,
    until a terminal one; IDLE after each quiet `heartbeat`, GOING_AWAY (and the end) when
    the worker stops. The watch is registered before the buffer is read, so nothing falls
    between. SSE and WebSocket routes frame the same updates.
    """
    if not token:
        raise Unauthorized("order token required (Authorization: Bearer <token> or ?token=)")
    last_id = integer_param(last_event_id, "Last-Event-ID")
    if not is_order_id(order_id):
        raise NotFound("order not found")
    hub = current_hub()
    watch = hub.watch(events.channel(order_id))
    try:
        cached = None if hub.redis_down else _cached_order(order_id, token)
        current, _ = _current_order(order_id, token, cached)
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


def _cached_order(order_id: str, token: str) -> dict | None:
    """The cached order JSON, if any; a token that does not open it is a 404 right here."""
    cached = events.read_latest(order_id)
    if cached is None:
        return None
    order_json, token_hash = cached
    if not token_matches(token, token_hash):
        raise NotFound("order not found")
    return order_json


def _current_order(order_id: str, token: str, known: dict | str | None) -> tuple[dict, str]:
    """The order from the database, or `known` (already authorized; the order or its JSON)
    when the database is down."""
    try:
        return order_json(_opened(order_id, token, statements.read_order)), "db"
    except DATABASE_DOWN as exc:
        log.warning("database unavailable for a wait: %s", first_line(exc))
        if known is None:
            raise ServiceUnavailable(
                "database unavailable and no cached state of this order, retry shortly"
            ) from None
        return (json.loads(known) if isinstance(known, str) else known), "cache"
    finally:
        db.session.remove()  # hand the connection back, and drop the session, before blocking


def expire_stale(older_than_seconds: int, limit: int = 500) -> int:
    """Expire orders still processing after `older_than_seconds`; their waiters are told.

    Each order is settled on its own, with the version check of every settlement: one that
    a webhook settles meanwhile is left as the webhook set it.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    stale = (
        db.session.execute(
            db.select(Order)
            .where(Order.payment_status == "processing", Order.created_at < cutoff)
            .order_by(Order.created_at)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    expired = 0
    for order in stale:
        order.settle("expired", reason="payment_timeout")
        try:
            db.session.commit()
        except StaleDataError:
            db.session.rollback()
            continue
        events.announce(order.to_json(), order.access_token_hash)
        expired += 1
    db.session.close()
    return expired


def latest_versions(order_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Current (version, published message) of the given orders: the hub's fallback poll."""
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
