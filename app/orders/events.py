"""An order's realtime footprint in Redis: channel, cached latest state, replay buffer."""

import json
import logging

from flask import current_app
from redis.exceptions import RedisError

from app.extensions import redis_store
from app.realtime import current_publisher
from app.realtime.publish import Buffer, Event, Latest

from .models import Order

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "order:status:"


def channel(order_id: str) -> str:
    return CHANNEL_PREFIX + order_id


def latest_key(order_id: str) -> str:
    return f"order:latest:{order_id}"


def buffer_key(order_id: str) -> str:
    return f"order:{order_id}:updates"


def message(order: Order) -> str:
    """What subscribers receive: the order JSON, whose version doubles as the event id."""
    return encode(order.to_json())


def encode(order_json: dict) -> str:
    return json.dumps(order_json, separators=(",", ":"))


def announce(order_json: dict, token_hash: str) -> bool:
    """Publish a committed change: pub/sub, cache and replay buffer in one pipeline."""
    cfg = current_app.config
    order_id = order_json["orderId"]
    # The cache carries the token hash so a cache hit can authorize without the database.
    cached = encode({"order": order_json, "tokenHash": token_hash})
    event = Event(
        channel(order_id),
        encode(order_json),
        Latest(latest_key(order_id), cfg["ORDER_CACHE_TTL"], cached),
        Buffer(buffer_key(order_id), cfg["EVENT_BUFFER_TTL"], cfg["EVENT_BUFFER_MAX"]),
    )
    return current_publisher().publish(event)


def read_latest(order_id: str) -> tuple[dict, str] | None:
    """The cached (order JSON, token hash), or None on a miss or when Redis fails."""
    try:
        raw = redis_store.client().get(latest_key(order_id))
    except RedisError as exc:
        log.debug("cache read failed: %s", exc)
        return None
    if raw is None:
        return None
    cached = json.loads(raw)
    return cached["order"], cached["tokenHash"]
