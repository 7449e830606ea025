"""The application factory: configuration, extensions, features and the WSGI chain."""

import os
import time

from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

from app import security
from app.config import Config


def create_app(config_class: type = Config, **overrides) -> Flask:
    app = Flask("app", instance_relative_config=True)
    app.config.from_object(config_class)
    app.config.update(overrides)
    configure_logging(app)
    configure_database_url(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    security.trust_proxies(app)
    return app


def configure_logging(app: Flask) -> None:
    from app import logs

    logs.configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])


def configure_database_url(app: Flask) -> None:
    """Default to the embedded SQLite file instance/orders.db; fit engine options to the kind."""
    uri = app.config.get("SQLALCHEMY_DATABASE_URI")
    if not uri:
        os.makedirs(app.instance_path, exist_ok=True)
        uri = f"sqlite:///{os.path.join(app.instance_path, 'orders.db')}"
        app.config["SQLALCHEMY_DATABASE_URI"] = uri
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    if uri.startswith("sqlite"):
        # Writers wait for SQLite's single write lock instead of failing at once. Pool sizing
        # is a server-database setting: SQLite keeps SQLAlchemy's own pool.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_pre_ping": options.get("pool_pre_ping", True),
            "connect_args": {"timeout": 15},
        }
    elif uri.startswith("postgresql"):
        # An unreachable server fails in seconds instead of the OS's TCP timeout, and a dead
        # peer is noticed by keepalives.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **options,
            # Pinged only after being idle a while (_ping_when_idle), not on every checkout:
            # under load that ping was a round trip and 5% of a worker per webhook and wait.
            "pool_pre_ping": False,
            "connect_args": {
                "connect_timeout": app.config["DATABASE_CONNECT_TIMEOUT"],
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                **options.get("connect_args", {}),
            },
        }


def register_extensions(app: Flask) -> None:
    from app import migrations_cli, ratelimit, realtime, security
    from app.extensions import db, redis_store

    db.init_app(app)
    migrations_cli.init_app(app)
    redis_store.init_app(app)
    realtime.init_app(app)
    security.init_app(app)
    ratelimit.init_app(app)
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_wal)
    elif uri.startswith("postgresql"):
        with app.app_context():
            _ping_when_idle(db.engine, app.config["DATABASE_PING_AFTER_IDLE"])


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


def register_blueprints(app: Flask) -> None:
    from app import admin, health, metrics, openapi, orders, pages, payments, simulator

    orders.init_app(app)
    payments.init_app(app)
    admin.init_app(app)
    pages.init_app(app)
    simulator.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    openapi.init_app(app)


def register_error_handlers(app: Flask) -> None:
    from app.errors import register_error_handlers as register

    register(app)
