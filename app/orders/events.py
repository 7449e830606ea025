"""An order's realtime footprint in Redis: channel, cached latest state, replay buffer."""

import json
import logging

from flask import current_app
from redis.exceptions import RedisError

from app.extensions import redis_store
from app.realtime import current_hub, current_publisher
from app.realtime.publish import Append, Latest, Publish

from .models import Order
from .signals import order_changed

log = logging.getLogger(__name__)

# An order's channel and keys share its id as a hash tag ({...}): on a Redis Cluster they are
# in one slot, so a webhook's publish, cache write and buffer append are one round trip to
# one node. The same names everywhere, one server or a cluster.
CHANNEL_PREFIX, CHANNEL_SUFFIX = "order:{", "}:status"


def channel(order_id: str) -> str:
    return CHANNEL_PREFIX + order_id + CHANNEL_SUFFIX


def latest_key(order_id: str) -> str:
    return f"order:{{{order_id}}}:latest"


def buffer_key(order_id: str) -> str:
    return f"order:{{{order_id}}}:updates"


def message(order: Order) -> str:
    """What subscribers receive: the order JSON, whose version doubles as the event id."""
    return encode(order.to_json())


def encode(order_json: dict) -> str:
    return json.dumps(order_json, separators=(",", ":"))


def announce(order_json: dict, token_hash: str) -> bool:
    """Publish a committed change: pub/sub, cache and replay buffer in one round trip."""
    cfg = current_app.config
    order_id, message = order_json["orderId"], encode(order_json)
    order_changed.send(current_app._get_current_object(), order=order_json)
    return current_publisher().send(
        Publish(channel(order_id), message, sharded=current_hub().sharded),
        _latest(order_json, token_hash),
        Append(buffer_key(order_id), message, cfg["EVENT_BUFFER_TTL"], cfg["EVENT_BUFFER_MAX"]),
    )


def remember(order_json: dict, token_hash: str) -> bool:
    """Cache a new order's state: nobody waits on it yet, so nothing is published."""
    return current_publisher().send(_latest(order_json, token_hash, if_absent=True))


def _latest(order_json: dict, token_hash: str, *, if_absent: bool = False) -> Latest:
    # The cache carries the token hash so a cache hit can authorize without the database.
    cached = encode({"order": order_json, "tokenHash": token_hash})
    ttl = current_app.config["ORDER_CACHE_TTL"]
    return Latest(latest_key(order_json["orderId"]), ttl, cached, if_absent)


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


def read_buffer(order_id: str) -> list[dict]:
    """The buffered events of an order, oldest first; empty when Redis fails."""
    try:
        raw = redis_store.client().lrange(buffer_key(order_id), 0, -1)
    except RedisError as exc:
        log.debug("buffer read failed: %s", exc)
        return []
    return [json.loads(item) for item in raw]
