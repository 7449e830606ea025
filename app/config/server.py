"""gunicorn's settings: gunicorn.conf.py reads them itself, before any application exists;
they are declared here to be documented with the application's (app/config/sections.py)."""

from __future__ import annotations

from dataclasses import dataclass

from .reader import setting


@dataclass(frozen=True)
class Server:
    """Server: gunicorn.conf.py reads these itself"""

    bind: str | None = setting("BIND", None, "address to listen on; unset: `0.0.0.0:$PORT`")
    port: int = setting("PORT", 8000, "port to listen on when `BIND` is unset")
    web_concurrency: int = setting("WEB_CONCURRENCY", 2, "worker processes")
    worker_connections: int = setting(
        "WORKER_CONNECTIONS", 12_000, "connections per worker; a held wait is one"
    )
    gunicorn_timeout: int = setting(
        "GUNICORN_TIMEOUT", 150, "seconds before a worker whose loop is stuck is replaced"
    )
    gunicorn_graceful_timeout: int = setting(
        "GUNICORN_GRACEFUL_TIMEOUT", 30, "seconds a stopping worker has to answer what it holds"
    )
    gunicorn_keepalive: int = setting(
        "GUNICORN_KEEPALIVE", 5, "seconds an idle keep-alive connection stays open"
    )
    access_log: str | None = setting(
        "ACCESS_LOG", None, "access log file (`-`: stdout); unset: off"
    )
    malloc_trim_interval: float = setting(
        "MALLOC_TRIM_INTERVAL", 2.0, "seconds between returns of freed heap to the system (0: off)"
    )
    prometheus_multiproc_dir: str | None = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "where workers keep metric values (emptied at start); unset: a temporary directory",
    )
