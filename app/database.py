"""The database engine's URL and options, decided here for each backend from the Database
settings, and the engine events each backend needs once the engine exists."""

import os
import time

from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

from app.config.sections import Database

# A dead PostgreSQL peer is noticed by TCP keepalives within a minute, not the OS's hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def configure_database_url(app: Flask) -> None:
    """Default to the embedded SQLite file instance/orders.db; fit engine options to the kind."""
    database: Database = app.extensions["settings"].database
    uri = database.url
    if not uri:
        os.makedirs(app.instance_path, exist_ok=True)
        uri = f"sqlite:///{os.path.join(app.instance_path, 'orders.db')}"
    app.config["SQLALCHEMY_DATABASE_URI"] = uri
    # SQLALCHEMY_ENGINE_OPTIONS given to create_app (a test's) stand in for the pool settings.
    given = app.config.get("SQLALCHEMY_ENGINE_OPTIONS")
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(uri, database, given)


def engine_options(uri: str, database: Database, given: dict | None = None) -> dict:
    if given is None:
        given = {"pool_size": database.pool_size, "max_overflow": database.max_overflow}
    if uri.startswith("sqlite"):
        # Writers wait for SQLite's single write lock instead of failing at once. Pool sizing
        # is a server-database setting: SQLite keeps SQLAlchemy's own pool.
        return {"pool_pre_ping": True, "connect_args": {"timeout": 15}}
    if uri.startswith("postgresql"):
        return {
            **given,
            # Pinged only after being idle a while (_ping_when_idle), not on every checkout:
            # under load that ping was a round trip and 5% of a worker per webhook and wait.
            "pool_pre_ping": False,
            # An unreachable server fails in seconds instead of the OS's TCP timeout.
            "connect_args": {
                "connect_timeout": database.connect_timeout,
                **KEEPALIVES,
                **given.get("connect_args", {}),
            },
        }
    return {"pool_pre_ping": True, **given}


def add_engine_events(app: Flask) -> None:
    """Once the engine is bound: SQLite journals in WAL mode, and PostgreSQL connections
    that sat idle are pinged before use."""
    from app.extensions import db

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_wal)
    elif uri.startswith("postgresql"):
        with app.app_context():
            _ping_when_idle(db.engine, app.extensions["settings"].database.ping_after_idle)


def _ping_when_idle(engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout when it sat idle longer than `idle_seconds`;
    one that fails is replaced. A connection in steady use has just proved itself, and a
    failure while in use invalidates the whole pool anyway (SQLAlchemy's disconnect
    handling), so the next checkouts reconnect."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("idle connection failed its ping") from exc


def _sqlite_wal(dbapi_connection, _record) -> None:
    # WAL lets readers (held waits, the fallback poll) run while a webhook writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
