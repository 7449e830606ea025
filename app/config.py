"""Configuration read from the environment. Every interval is overridable so tests run fast."""

import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def normalize_database_url(url: str) -> str:
    """Map the plain postgres URL forms users pass to the psycopg2 driver.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` URL as psycopg 3, which is not installed.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY", "change-me")

    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")  # "text" or "json" (one object a line)
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    # Proxies in front that set X-Forwarded-For (nginx: 1). The client address of the limits
    # is read from that header only when this is set: anyone can send it.
    PROXY_FIX_X_FOR = _int("PROXY_FIX_X_FOR", 0)
    # Seconds each /readyz check (database, Redis) may take before it counts as down.
    READYZ_TIMEOUT = _float("READYZ_TIMEOUT", 1.0)

    # None means: the SQLite file instance/orders.db, resolved by the factory.
    SQLALCHEMY_DATABASE_URI = (
        normalize_database_url(os.environ["DATABASE_URL"])
        if os.environ.get("DATABASE_URL")
        else None
    )
    # pool_size: a gevent worker runs many requests at once; overflow connections are closed
    # when handed back, so a pool smaller than the usual concurrency reconnects constantly.
    SQLALCHEMY_ENGINE_OPTIONS = {
        "pool_pre_ping": True,
        "pool_size": _int("DATABASE_POOL_SIZE", 20),
        "max_overflow": _int("DATABASE_MAX_OVERFLOW", 10),
    }

    DATABASE_CONNECT_TIMEOUT = _int("DATABASE_CONNECT_TIMEOUT", 3)  # seconds, PostgreSQL
    # A PostgreSQL connection idle longer than this (seconds) is pinged before it is used.
    DATABASE_PING_AFTER_IDLE = _float("DATABASE_PING_AFTER_IDLE", 5.0)

    REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    # Command connections per worker (cache reads, publishes); the hub adds one pub/sub connection.
    REDIS_POOL_SIZE = _int("REDIS_POOL_SIZE", 3)
    REDIS_SOCKET_TIMEOUT = _float("REDIS_SOCKET_TIMEOUT", 2.0)
    REDIS_CONNECT_TIMEOUT = _float("REDIS_CONNECT_TIMEOUT", 0.5)
    # Order channels on sharded pub/sub (Redis 7 SSUBSCRIBE/SPUBLISH), the step towards a
    # Redis Cluster; see docs/SCALING.md. Every worker and publisher must agree on it.
    REDIS_SHARDED_PUBSUB = os.environ.get("REDIS_SHARDED_PUBSUB", "") == "1"

    WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "")
    ADMIN_TOKENS = [t for t in os.environ.get("ADMIN_TOKENS", "").split(",") if t.strip()]

    LONGPOLL_DEFAULT_TIMEOUT_MS = _int("LONGPOLL_DEFAULT_TIMEOUT_MS", 60_000)
    LONGPOLL_MAX_TIMEOUT_MS = _int("LONGPOLL_MAX_TIMEOUT_MS", 120_000)

    ORDER_CACHE_TTL = _int("ORDER_CACHE_TTL", 60)
    EVENT_BUFFER_TTL = _int("EVENT_BUFFER_TTL", 300)
    EVENT_BUFFER_MAX = _int("EVENT_BUFFER_MAX", 50)

    # Seconds between batched database polls while Redis pub/sub is unavailable.
    FALLBACK_DB_POLL_INTERVAL = _float("FALLBACK_DB_POLL_INTERVAL", 2.0)
    # Every HUB_CANARY_INTERVAL seconds the hub publishes to itself; no echo within
    # HUB_CANARY_TIMEOUT means a half-open or silently dead subscription: reconnect.
    HUB_CANARY_INTERVAL = _float("HUB_CANARY_INTERVAL", 5.0)
    HUB_CANARY_TIMEOUT = _float("HUB_CANARY_TIMEOUT", 3.0)
    # Cap of the hub's reconnect backoff, in seconds.
    HUB_RECONNECT_MAX_DELAY = _float("HUB_RECONNECT_MAX_DELAY", 2.0)

    # Admin statistics and streams.
    STATS_SAMPLE_RATE = _float("STATS_SAMPLE_RATE", 0.1)  # share of order changes announced
    STATS_TRAILING_DELAY = _float("STATS_TRAILING_DELAY", 2.0)  # unannounced change: at most
    STATS_MIN_PUBLISH_INTERVAL = _float("STATS_MIN_PUBLISH_INTERVAL", 0.25)  # s, per worker
    STATS_CACHE_TTL = _int("STATS_CACHE_TTL", 60)
    STATS_SAFETY_POLL_INTERVAL = _float("STATS_SAFETY_POLL_INTERVAL", 30.0)
    STATS_DB_POLL_INTERVAL = _float("STATS_DB_POLL_INTERVAL", 10.0)
    SSE_HEARTBEAT_INTERVAL = _float("SSE_HEARTBEAT_INTERVAL", 15.0)
    SSE_MAX_STREAMS_PER_TOKEN = _int("SSE_MAX_STREAMS_PER_TOKEN", 3)
    PRESENCE_INTERVAL = _float("PRESENCE_INTERVAL", 5.0)  # workers report their counts

    # Background services, run once across the deployment (a Redis lease per service).
    SERVICE_LEASE_TTL = _float("SERVICE_LEASE_TTL", 15.0)
    RECONCILE_INTERVAL = _float("RECONCILE_INTERVAL", 60.0)
    ORDER_EXPIRY_SECONDS = _int("ORDER_EXPIRY_SECONDS", 900)  # processing longer: expired

    # Abuse limits. 0 disables a limit.
    MAX_BODY_BYTES = _int("MAX_BODY_BYTES", 64 * 1024)
    CORS_ORIGINS = [o.strip() for o in os.environ.get("CORS_ORIGINS", "").split(",") if o.strip()]
    ORDER_CREATE_RATE_LIMIT = os.environ.get("ORDER_CREATE_RATE_LIMIT", "30 per minute")
    WAITS_PER_CLIENT = _int("WAITS_PER_CLIENT", 100)  # held at once, per client address
    WAITS_PER_ORDER = _int("WAITS_PER_ORDER", 10)  # held at once, per order
    # Waits reading their order's state at once, per worker (the greenlet path's final read
    # too); the rest queue for a turn, so a burst (10,000 arriving together) never waits
    # past the pools' checkout timeouts. 0: no limit.
    WAITS_OPENING_AT_ONCE = _int("WAITS_OPENING_AT_ONCE", 100)

    # Pages. The order page's retry strategy: MAX_LONG_POLLS long polls, RETRY_PAUSE_MS
    # apart, then "still processing"; FALLBACK_POLL_MS between plain polls while the server
    # fails. The dashboard reconnects its streams ADMIN_PAGE_RECONNECT_MS after losing them.
    ORDER_PAGE_MAX_LONG_POLLS = _int("ORDER_PAGE_MAX_LONG_POLLS", 4)
    ORDER_PAGE_RETRY_PAUSE_MS = _int("ORDER_PAGE_RETRY_PAUSE_MS", 5000)
    ORDER_PAGE_FALLBACK_POLL_MS = _int("ORDER_PAGE_FALLBACK_POLL_MS", 3000)
    ADMIN_PAGE_RECONNECT_MS = _int("ADMIN_PAGE_RECONNECT_MS", 5000)
    # Development only: the order page offers buttons that fake the provider's callback.
    DEV_SIMULATE_PROVIDER = os.environ.get("DEV_SIMULATE_PROVIDER", "") == "1"


class TestConfig(Config):
    TESTING = True
