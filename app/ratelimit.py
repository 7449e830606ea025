"""Request-rate limits (Flask-Limiter): counted in Redis across workers, in memory while
Redis is down. Answers 429 with Retry-After."""

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from app.limits_adapter import SCHEME

limiter = Limiter(key_func=get_remote_address)


def init_app(app) -> None:
    cfg = app.config
    # The app's own bounded pool: rate checks add no Redis connection to the worker's few.
    if app.extensions["redis_target"].cluster:
        cfg.setdefault("RATELIMIT_STORAGE_URI", SCHEME + "://")
        cfg.setdefault("RATELIMIT_STORAGE_OPTIONS", {"client": app.extensions["redis"]})
    else:
        cfg.setdefault("RATELIMIT_STORAGE_URI", cfg["REDIS_URL"])
        cfg.setdefault(
            "RATELIMIT_STORAGE_OPTIONS",
            {"connection_pool": app.extensions["redis"].connection_pool},
        )
    cfg.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    cfg.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)


def order_creation_limit() -> str:
    return current_app.config["ORDER_CREATE_RATE_LIMIT"]


def order_creation_unlimited() -> bool:
    return not current_app.config["ORDER_CREATE_RATE_LIMIT"]
