"""Fixtures: a fresh PostgreSQL database per run, the shared Redis, private redis-servers,
in-process apps and live gunicorn servers. No mocks of Redis or PostgreSQL anywhere.

The test process is patched by gevent first, exactly like a worker, so the hub and the
concurrent waits of a test run on greenlets as they do in production.
"""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()

import os  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402

from app import create_app  # noqa: E402
from app.config import TestConfig, normalize_database_url  # noqa: E402
from app.extensions import db  # noqa: E402
from app.realtime.hub import Hub  # noqa: E402
from tests.support import servers  # noqa: E402
from tests.support.helpers import WEBHOOK_SECRET  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A database number of its own on the shared Redis: flushed before every test.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

# Fast intervals so fault and fallback paths finish in a test's time.
FAST = {
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "FALLBACK_DB_POLL_INTERVAL": 0.2,
    "HUB_CANARY_INTERVAL": 0.5,
    "HUB_CANARY_TIMEOUT": 1.0,
    "HUB_RECONNECT_MAX_DELAY": 0.5,
    "LONGPOLL_MAX_TIMEOUT_MS": 30_000,
    # The suite drives hundreds of orders and waits from one address; limits have their
    # own tests.
    "ORDER_CREATE_RATE_LIMIT": "",
    "WAITS_PER_CLIENT": 0,
    "WAITS_PER_ORDER": 0,
}


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this run, built by `flask db upgrade`, dropped after."""
    with servers.fresh_database(PG_ADMIN_URL, "orderwait_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_app(pg_url, redis_client, redis_url):
    """Build in-process apps (PostgreSQL, shared Redis by default); stops their hubs after."""
    apps = []

    def build(**overrides):
        config = {
            "SQLALCHEMY_DATABASE_URI": normalize_database_url(pg_url),
            "REDIS_URL": redis_url,
            **FAST,
            **overrides,
        }
        app = create_app(TestConfig, **config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["hub"].stop()
        app.extensions["admin.trigger"].stop()  # a pending trailing announcement included
        app.extensions["publisher"].stop()
        app.extensions["redis"].connection_pool.disconnect()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def make_hub():
    """Build started hubs with fast intervals; stopped after the test."""
    hubs = []

    def build(url: str, *, wait_connected: bool = False, **options) -> Hub:
        settings = {"poll_interval": 0.1, "canary_interval": 0.5, "canary_timeout": 1.0}
        hub = Hub(url, **{**settings, **options})
        hub.start()
        hubs.append(hub)
        if wait_connected:
            servers.eventually(lambda: hub.connected, 5, "hub connected")
        return hub

    yield build
    for hub in hubs:
        hub.stop()


@pytest.fixture
def private_redis():
    """Start a redis-server of this test's own on a free port; it may be killed at will."""
    started = []

    def start(port: int | None = None) -> servers.RedisServer:
        server = servers.RedisServer(port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_server(pg_url, redis_url):
    """Start gunicorn (gevent workers, the repo's gunicorn.conf.py) on free loopback ports."""
    started = []

    def start(port: int | None = None, workers: int = 1, **env) -> servers.LiveServer:
        settings = {
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            **{k: str(v) for k, v in FAST.items()},
            **{k: str(v) for k, v in env.items()},
        }
        server = servers.LiveServer(settings, workers=workers, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


GROUPS = ("unit", "api", "live", "browser")


def pytest_collection_modifyitems(items):
    """Mark each test with its group, the folder it lives in under tests/."""
    root = os.path.dirname(__file__)
    for item in items:
        group = os.path.relpath(str(item.path), root).split(os.sep)[0]
        if group in GROUPS:
            item.add_marker(getattr(pytest.mark, group))
