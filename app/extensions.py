"""Extension instances, bound to the app by init_app in the factory."""

import redis
from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from app.realtime.redis_target import RedisTarget

# Stable constraint names, so Alembic revisions are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# expire_on_commit=False: a committed order is serialized right after commit; expiring it
# would cost one reload query per request for data this process just wrote.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


class RedisStore:
    """One bounded command-connection pool per worker process (per node on a cluster).

    A BlockingConnectionPool keeps the number of Redis connections fixed however many
    requests are in flight: requests queue for a connection instead of opening new ones.
    """

    def init_app(self, app) -> None:
        cfg = app.config
        target = app.extensions["redis_target"] = RedisTarget.from_config(cfg)
        app.extensions["redis"] = target.command_client(
            max_connections=cfg["REDIS_POOL_SIZE"],
            timeout=cfg["REDIS_SOCKET_TIMEOUT"],
            socket_timeout=cfg["REDIS_SOCKET_TIMEOUT"],
            socket_connect_timeout=cfg["REDIS_CONNECT_TIMEOUT"],
            socket_keepalive=True,
            decode_responses=True,
            client_name="orderwait:cmd",
        )

    @staticmethod
    def client() -> redis.Redis:
        return current_app.extensions["redis"]


redis_store = RedisStore()
