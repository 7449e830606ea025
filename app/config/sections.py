"""The settings, in typed sections: each one's environment variable, type, default and
meaning (app/config/reader.py declares, reads and documents them). gunicorn's own section
is app/config/server.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .reader import ConfigError, setting
from .topology import cluster_problem, sentinel_problem


def normalize_database_url(url: str) -> str:
    """Map the plain postgres URL forms users pass to the psycopg2 driver.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` URL as psycopg 3, which is not installed.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Logging:
    """Logging"""

    format: Literal["text", "json"] = setting(
        "LOG_FORMAT", "text", "`json`: one JSON object a line, for a log collector"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = setting(
        "LOG_LEVEL", "INFO", "level of the root logger (any case)"
    )


@dataclass(frozen=True)
class Http:
    """Requests"""

    # The client address (the limits count by it) comes from X-Forwarded-For only when this
    # is set: anyone can send that header.
    proxy_fix_x_for: int = setting(
        "PROXY_FIX_X_FOR", 0, "proxies in front whose `X-Forwarded-For` is trusted (nginx: 1)"
    )
    max_body_bytes: int = setting("MAX_BODY_BYTES", 64 * 1024, "larger request bodies get 413")
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS", (), "comma-separated origins allowed cross-origin on `/api/`"
    )
    readyz_timeout: float = setting(
        "READYZ_TIMEOUT", 1.0, "seconds each `/readyz` check (database, Redis) may take"
    )


@dataclass(frozen=True)
class Access:
    """Secrets"""

    webhook_secret: str = setting(
        "WEBHOOK_SECRET", "", "HMAC key of the provider's callbacks; empty: all are refused"
    )
    admin_tokens: tuple[str, ...] = setting(
        "ADMIN_TOKENS", (), "comma-separated admin tokens; empty: no admin access"
    )


@dataclass(frozen=True)
class Database:
    """Database"""

    url: str | None = setting(
        "DATABASE_URL",
        None,
        "`postgresql://...` (mapped to psycopg2); unset: SQLite file `instance/orders.db`",
        key="SQLALCHEMY_DATABASE_URI",
        convert=normalize_database_url,
    )
    # A gevent worker runs many requests at once, and overflow connections are closed when
    # handed back: a pool smaller than the usual concurrency reconnects constantly.
    pool_size: int = setting("DATABASE_POOL_SIZE", 20, "PostgreSQL connections kept per worker")
    max_overflow: int = setting(
        "DATABASE_MAX_OVERFLOW", 10, "PostgreSQL connections per worker beyond the pool"
    )
    connect_timeout: int = setting(
        "DATABASE_CONNECT_TIMEOUT", 3, "seconds a PostgreSQL connection attempt may take"
    )
    ping_after_idle: float = setting(
        "DATABASE_PING_AFTER_IDLE",
        5.0,
        "a PostgreSQL connection idle longer (seconds) is pinged before use, replaced if dead",
    )


@dataclass(frozen=True)
class Redis:
    """Redis"""

    url: str = setting(
        "REDIS_URL", "redis://localhost:6379/0", "pub/sub, the order cache, limits and leases"
    )
    pool_size: int = setting(
        "REDIS_POOL_SIZE", 3, "command connections per worker; the hub adds one for pub/sub"
    )
    socket_timeout: float = setting(
        "REDIS_SOCKET_TIMEOUT", 2.0, "seconds a Redis command may take (every connection)"
    )
    connect_timeout: float = setting(
        "REDIS_CONNECT_TIMEOUT", 0.5, "seconds a Redis connection attempt may take"
    )
    sentinels: tuple[str, ...] = setting(
        "REDIS_SENTINELS",
        (),
        "comma-separated host:port of Redis Sentinels: every connection goes to the primary "
        "they name (REDIS_URL gives only the database and password)",
    )
    sentinel_master: str = setting(
        "REDIS_SENTINEL_MASTER", "", "the name the sentinels monitor the primary by"
    )
    sentinel_password: str = setting(
        "REDIS_SENTINEL_PASSWORD", "", "the sentinels' own password, if they have one"
    )
    cluster_nodes: tuple[str, ...] = setting(
        "REDIS_CLUSTER_NODES",
        (),
        "comma-separated host:port of Redis Cluster nodes to discover it from: commands go "
        "to each key's node, order channels are sharded (REDIS_URL gives only the password)",
    )
    sharded_pubsub: bool = setting(
        "REDIS_SHARDED_PUBSUB",
        False,
        "order channels on sharded pub/sub (`SPUBLISH`) on one Redis too; all must agree "
        "(always on with REDIS_CLUSTER_NODES)",
    )

    def __post_init__(self):
        problem = sentinel_problem(self.sentinels, self.sentinel_master, self.url)
        problem = problem or cluster_problem(self.cluster_nodes, self.sentinels, self.url)
        if problem:
            raise ConfigError(problem)  # read() reports it with every other bad variable


@dataclass(frozen=True)
class Realtime:
    """The hub, the order cache and the replay buffer"""

    fallback_db_poll_interval: float = setting(
        "FALLBACK_DB_POLL_INTERVAL", 2.0, "seconds between the hub's database polls without Redis"
    )
    hub_safety_poll_interval: float = setting(
        "HUB_SAFETY_POLL_INTERVAL",
        30.0,
        "seconds between the hub's database reads while connected (a publish lost elsewhere)",
    )
    # A publish to itself is how the hub tells a half-open or silently dead subscription.
    hub_canary_interval: float = setting(
        "HUB_CANARY_INTERVAL", 5.0, "seconds between the hub's publishes to itself"
    )
    hub_canary_timeout: float = setting(
        "HUB_CANARY_TIMEOUT", 3.0, "no echo within this (seconds): the hub reconnects"
    )
    hub_reconnect_max_delay: float = setting(
        "HUB_RECONNECT_MAX_DELAY", 2.0, "cap of the hub's reconnect backoff, in seconds"
    )
    order_cache_ttl: int = setting("ORDER_CACHE_TTL", 60, "seconds an order stays cached in Redis")
    event_buffer_ttl: int = setting(
        "EVENT_BUFFER_TTL", 300, "seconds an order's events are kept for replay"
    )
    event_buffer_max: int = setting("EVENT_BUFFER_MAX", 50, "events kept for replay per order")


@dataclass(frozen=True)
class Waits:
    """Waits and streams"""

    longpoll_default_timeout_ms: int = setting(
        "LONGPOLL_DEFAULT_TIMEOUT_MS", 60_000, "a wait's timeout when the request sets none"
    )
    longpoll_max_timeout_ms: int = setting(
        "LONGPOLL_MAX_TIMEOUT_MS", 120_000, "longest wait; a longer timeout is clamped to it"
    )
    # A burst (10,000 waits arriving together) must not wait past the pools' checkout
    # timeouts: the rest queue for a turn.
    waits_opening_at_once: int = setting(
        "WAITS_OPENING_AT_ONCE", 100, "waits per worker reading their order at once (0: no limit)"
    )
    # A stopping worker's clients all come back at once unless told otherwise: each is told
    # its own delay, drawn over this window.
    shutdown_reconnect_window_ms: int = setting(
        "SHUTDOWN_RECONNECT_WINDOW_MS",
        2000,
        "window over which a stopping worker spreads its clients' return (0: at once)",
    )
    sse_heartbeat_interval: float = setting(
        "SSE_HEARTBEAT_INTERVAL", 15.0, "seconds between a stream's heartbeats"
    )
    sse_max_streams_per_token: int = setting(
        "SSE_MAX_STREAMS_PER_TOKEN", 3, "admin streams open at once per token"
    )
    presence_interval: float = setting(
        "PRESENCE_INTERVAL", 5.0, "seconds between the workers' reports of what they hold"
    )


@dataclass(frozen=True)
class Stats:
    """Admin statistics"""

    sample_rate: float = setting(
        "STATS_SAMPLE_RATE", 0.1, "share of order changes announced to the admin streams"
    )
    trailing_delay: float = setting(
        "STATS_TRAILING_DELAY", 2.0, "an unannounced change is announced this late at most"
    )
    min_publish_interval: float = setting(
        "STATS_MIN_PUBLISH_INTERVAL", 0.25, "seconds between announcements, per worker"
    )
    cache_ttl: int = setting("STATS_CACHE_TTL", 60, "seconds computed statistics stay cached")
    safety_poll_interval: float = setting(
        "STATS_SAFETY_POLL_INTERVAL", 30.0, "statistics streamed are never older (seconds)"
    )
    db_poll_interval: float = setting(
        "STATS_DB_POLL_INTERVAL", 10.0, "seconds between database reads of a feed without Redis"
    )


@dataclass(frozen=True)
class Services:
    """Background services, run once across the deployment"""

    lease_ttl: float = setting(
        "SERVICE_LEASE_TTL", 15.0, "seconds a service's Redis lease lasts unless renewed"
    )
    reconcile_interval: float = setting(
        "RECONCILE_INTERVAL", 60.0, "seconds between runs of the reconciler"
    )
    order_expiry_seconds: int = setting(
        "ORDER_EXPIRY_SECONDS", 900, "an order processing longer (seconds) is expired"
    )


@dataclass(frozen=True)
class Limits:
    """Abuse limits"""

    order_create_rate_limit: str = setting(
        "ORDER_CREATE_RATE_LIMIT", "30 per minute", "order creations per client address; empty: off"
    )
    waits_per_client: int = setting(
        "WAITS_PER_CLIENT", 100, "waits held at once per client address (0: off)"
    )
    waits_per_order: int = setting("WAITS_PER_ORDER", 10, "waits held at once per order (0: off)")


@dataclass(frozen=True)
class Pages:
    """Pages: the order page's retries, the dashboard's reconnects"""

    order_page_max_long_polls: int = setting(
        "ORDER_PAGE_MAX_LONG_POLLS", 4, "long polls before the page says still processing"
    )
    order_page_retry_pause_ms: int = setting(
        "ORDER_PAGE_RETRY_PAUSE_MS", 5000, "milliseconds between those long polls"
    )
    order_page_fallback_poll_ms: int = setting(
        "ORDER_PAGE_FALLBACK_POLL_MS",
        3000,
        "milliseconds between plain polls while the server fails",
    )
    admin_page_reconnect_ms: int = setting(
        "ADMIN_PAGE_RECONNECT_MS", 5000, "milliseconds before the dashboard reopens a lost stream"
    )


@dataclass(frozen=True)
class Development:
    """Development"""

    dev_simulate_provider: bool = setting(
        "DEV_SIMULATE_PROVIDER", False, "the order page offers buttons faking provider callbacks"
    )
