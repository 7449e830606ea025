"""The application factory: configuration, extensions, features and the WSGI chain."""

from flask import Flask

from app import security
from app.config import Config, configure
from app.database import add_engine_events, configure_database_url


def create_app(config_class: type = Config, **overrides) -> Flask:
    app = Flask("app", instance_relative_config=True)
    app.config.from_object(config_class)
    configure(app, overrides)  # the environment is read here, once; overrides win
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


def register_extensions(app: Flask) -> None:
    from app import migrations_cli, ratelimit, realtime, security
    from app.extensions import db, redis_store

    db.init_app(app)
    migrations_cli.init_app(app)
    redis_store.init_app(app)
    realtime.init_app(app)
    security.init_app(app)
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


def register_error_handlers(app: Flask) -> None:
    from app.errors import register_error_handlers as register

    register(app)
