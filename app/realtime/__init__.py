"""Realtime core: the per-process subscriber hub and publishing. Knows no feature."""

from flask import current_app
from gevent.lock import BoundedSemaphore, DummySemaphore

from app.lifecycle import KEY as LIFECYCLE
from app.lifecycle import Lifecycle

from . import websocket
from .connections import LeaseLimiter, Presence, registry
from .hub import Delivery, Hub, Watch
from .longpoll import LongPolls
from .publish import Publisher

__all__ = [
    "Delivery",
    "Hub",
    "Publisher",
    "Watch",
    "current_hub",
    "current_publisher",
    "init_app",
    "registry",
]


def init_app(app) -> None:
    """Create this process's hub and publisher; each starts on first use (the hub also when
    the server worker starts). Needs the Redis command client to be bound already."""
    cfg = app.config
    hub = app.extensions["hub"] = Hub(
        app.extensions["redis_target"],
        publisher=app.extensions["redis"],
        poll_interval=cfg["FALLBACK_DB_POLL_INTERVAL"],
        safety_poll_interval=cfg["HUB_SAFETY_POLL_INTERVAL"],
        canary_interval=cfg["HUB_CANARY_INTERVAL"],
        canary_timeout=cfg["HUB_CANARY_TIMEOUT"],
        reconnect_max_delay=cfg["HUB_RECONNECT_MAX_DELAY"],
        connect_timeout=cfg["REDIS_CONNECT_TIMEOUT"],
        socket_timeout=cfg["REDIS_SOCKET_TIMEOUT"],
        sharded=cfg["REDIS_SHARDED_PUBSUB"],
    )
    # A failed publish leaves waiters unwoken while the hub is connected: have it poll.
    app.extensions["publisher"] = Publisher(
        app.extensions["redis"],
        wait_timeout=cfg["REDIS_SOCKET_TIMEOUT"],
        on_failure=hub.request_poll,
    )
    app.extensions["presence"] = Presence(
        app.extensions["redis"],
        lambda: {
            "waiters": hub.stats()["waiters"],
            "streams": len(registry) - registry.counts().get("wait", 0),
        },
        cfg["PRESENCE_INTERVAL"],
    )
    client = app.extensions["redis"]
    app.extensions["stream_limiter"] = LeaseLimiter(
        client, cfg["SSE_MAX_STREAMS_PER_TOKEN"], 3 * cfg["SSE_HEARTBEAT_INTERVAL"], "sse:streams:"
    )
    # A held wait's lease outlives the longest wait; it is given back when the wait ends.
    wait_lease = cfg["LONGPOLL_MAX_TIMEOUT_MS"] / 1000 + 30
    app.extensions["wait_limits"] = (
        LeaseLimiter(client, cfg["WAITS_PER_CLIENT"], wait_lease, "limit:waits:client:"),
        LeaseLimiter(client, cfg["WAITS_PER_ORDER"], wait_lease, "limit:waits:order:"),
    )
    # Long polls opening at once, per worker; the rest queue for a turn, so a burst (10,000
    # arriving together) never waits past the pools' checkout timeouts.
    at_once = cfg["WAITS_OPENING_AT_ONCE"]
    turns = BoundedSemaphore(at_once) if at_once else DummySemaphore()
    longpolls = app.extensions["longpolls"] = LongPolls(hub, turns, app.app_context)
    # What the server starts in each worker, drains when it is told to stop, and waits for
    # (queued and parked long polls) before the process ends.
    lifecycle = app.extensions[LIFECYCLE] = Lifecycle()
    lifecycle.on_start(hub.start)
    lifecycle.on_start(app.extensions["presence"].start)
    lifecycle.on_drain(hub.drain)
    lifecycle.on_exit_wait_for(longpolls.wait_empty)
    websocket.init_app(app)


def current_hub() -> Hub:
    return current_app.extensions["hub"]


def current_publisher() -> Publisher:
    return current_app.extensions["publisher"]
