"""The application factory: configuration, extensions, features and the WSGI chain."""

from flask import Flask

from app import security
from app.config import Config, configure
from app.database import (
    add_engine_events,
    configure_database_url,
    end_sessions_on_dead_connections,
)
from app.plain_wsgi import PlainRoutes
from app.responses import Cors, JsonProvider


def create_app(config_class: type = Config, **overrides) -> Flask:
    app = Flask("app", instance_relative_config=True)
    app.json = JsonProvider(app)
    app.config.from_object(config_class)
    configure(app, overrides)  # the environment is read here, once; overrides win
    configure_logging(app)
    configure_database_url(app)
    cors = Cors(app.config["CORS_ORIGINS"])  # one policy for Flask's answers and the plain routes
    register_extensions(app, cors)
    register_blueprints(app)
    register_error_handlers(app)
    build_wsgi_chain(app, cors)
    return app


def configure_logging(app: Flask) -> None:
    from app import logs

    logs.configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])


def register_extensions(app: Flask, cors: Cors) -> None:
    from app import migrations_cli, ratelimit, realtime, security
    from app.extensions import db, redis_store

    db.init_app(app)
    end_sessions_on_dead_connections(app)
    migrations_cli.init_app(app)
    redis_store.init_app(app)
    realtime.init_app(app)
    security.init_app(app, cors)
    ratelimit.init_app(app)
    add_engine_events(app)


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


def build_wsgi_chain(app: Flask, cors: Cors) -> None:
    """The WSGI chain, outermost first: the proxy headers (when behind proxies), then the
    plain routes (waits and the webhook, app/plain_wsgi.py), then Flask."""
    from app.orders.routes import wait
    from app.payments.routes import callback

    plain = PlainRoutes(
        app,
        [wait, callback],
        app.wsgi_app,
        cors,
        app.extensions["longpolls"],
    )
    app.extensions["plain_routes"] = plain
    app.wsgi_app = security.behind_proxies(app, plain)


def register_error_handlers(app: Flask) -> None:
    from app.responses import register_error_handlers as register

    register(app)
