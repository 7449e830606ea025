"""Realtime core: the per-process subscriber hub and publishing. Knows no feature."""

from flask import current_app

from .hub import Delivery, Hub, Watch

__all__ = ["Delivery", "Hub", "Watch", "current_hub", "init_app"]


def init_app(app) -> None:
    """Create this process's hub. It starts on first use, or when the server worker starts."""
    cfg = app.config
    app.extensions["hub"] = Hub(
        cfg["REDIS_URL"],
        poll_interval=cfg["FALLBACK_DB_POLL_INTERVAL"],
        ping_interval=cfg["HUB_PING_INTERVAL"],
        reconnect_max_delay=cfg["HUB_RECONNECT_MAX_DELAY"],
        connect_timeout=cfg["REDIS_CONNECT_TIMEOUT"],
    )


def current_hub() -> Hub:
    return current_app.extensions["hub"]
