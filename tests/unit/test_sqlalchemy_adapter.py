"""The private SQLAlchemy API app/driver_statement.py relies on (Pool._invalidate) is still
there and still does what the driver statements need: a failure here means SQLAlchemy
changed under invalidate_with_older; re-verify it before moving the pin in requirements.txt.
"""

import inspect

import pytest
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.pool import Pool

from app.config import normalize_database_url
from app.driver_statement import VERIFIED_SQLALCHEMY, invalidate_with_older


def backend_pid(pooled) -> int:
    cursor = pooled.driver_connection.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    (pid,) = cursor.fetchone()
    cursor.close()
    pooled.driver_connection.rollback()
    return pid


@pytest.fixture
def two_connections(pg_url):
    engine = create_engine(normalize_database_url(pg_url), pool_size=2, max_overflow=0)
    yield engine
    engine.dispose()


def test_sqlalchemy_is_a_verified_release():
    major, minor, *_ = (int(part) for part in sqlalchemy.__version__.split(".")[:2])
    assert (major, minor) in VERIFIED_SQLALCHEMY, sqlalchemy.__version__


def test_pool_invalidate_keeps_its_signature():
    parameters = inspect.signature(Pool._invalidate).parameters
    assert list(parameters) == ["self", "connection", "exception", "_checkin"]
    assert parameters["exception"].default is None
    assert parameters["_checkin"].default is True


def test_the_connection_and_every_older_one_are_replaced(two_connections):
    older = two_connections.raw_connection()
    failed = two_connections.raw_connection()
    stale = {backend_pid(older), backend_pid(failed)}
    older.close()  # back in the pool, opened before the failed one

    invalidate_with_older(two_connections, failed, ConnectionError("server closed"))
    assert not failed.is_valid
    failed.close()

    fresh = [two_connections.raw_connection() for _ in range(2)]
    try:
        assert stale.isdisjoint(backend_pid(c) for c in fresh)
    finally:
        for connection in fresh:
            connection.close()
