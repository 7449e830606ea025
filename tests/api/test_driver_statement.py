"""A statement run straight on psycopg2 gives what SQLAlchemy would: rows, errors, pool state."""

import pytest
from sqlalchemy import JSON, bindparam, create_engine, literal, select, text
from sqlalchemy.exc import DataError, OperationalError

from app.config import normalize_database_url
from app.driver_statement import DriverStatement
from app.extensions import db
from app.orders.models import Order
from tests.support.helpers import create_order, pay

orders = Order.__table__


@pytest.fixture
def one_connection(pg_url):
    """An engine whose pool holds one connection: what a statement leaves behind is seen."""
    engine = create_engine(normalize_database_url(pg_url), pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def test_rows_are_those_sqlalchemy_returns(app, client):
    order = create_order(client)
    pay(client, order)
    by_number = select(orders).where(orders.c.order_number == bindparam("number"))
    with app.app_context():
        expected = db.session.execute(by_number, {"number": order["orderNumber"]}).one()
        db.session.remove()
        row = DriverStatement(db.engine, by_number).one_or_none({"number": order["orderNumber"]})
        missing = DriverStatement(db.engine, by_number).one_or_none({"number": "nope"})
    assert tuple(row) == tuple(expected)
    assert [type(v) for v in row] == [type(v) for v in expected]
    assert row._fields == tuple(expected._fields)
    assert row.paid_at is not None and row.version == 2
    assert missing is None


def test_literals_of_the_statement_are_sent_too(one_connection):
    statement = select(literal(41) + bindparam("n"), literal("x").label("x"))
    assert tuple(DriverStatement(one_connection, statement).one_or_none({"n": 1})) == (42, "x")


def test_runs_in_autocommit_and_returns_the_connection_as_it_came(one_connection):
    statement = select(text("current_setting('transaction_isolation')"))
    DriverStatement(one_connection, statement).one_or_none({})
    with one_connection.connect() as connection:
        # The pool's one connection, back out of autocommit: this runs in a transaction.
        assert connection.connection.driver_connection.autocommit is False
        connection.execute(text("SELECT 1"))
        assert connection.in_transaction()


def test_a_driver_error_is_sqlalchemys_and_the_connection_stays_usable(one_connection):
    statement = DriverStatement(one_connection, select(literal(1) / bindparam("zero")))
    with pytest.raises(DataError) as raised:
        statement.one_or_none({"zero": 0})
    assert "division by zero" in str(raised.value.orig)
    assert raised.value.connection_invalidated is False
    with one_connection.connect() as connection:
        assert connection.connection.driver_connection.autocommit is False
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_lost_connection_is_invalidated_and_the_next_statement_reconnects(one_connection, pg_url):
    statement = DriverStatement(one_connection, select(text("pg_backend_pid()")))
    (first_pid,) = statement.one_or_none({})
    with create_engine(normalize_database_url(pg_url)).connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
    with pytest.raises(OperationalError) as raised:
        statement.one_or_none({})
    assert raised.value.connection_invalidated is True
    (second_pid,) = statement.one_or_none({})
    assert second_pid != first_pid


def test_a_statement_the_driver_cannot_run_as_compiled_is_refused(one_connection):
    with pytest.raises(ValueError, match="processing"):
        DriverStatement(one_connection, select(bindparam("document", type_=JSON)))
    expanding = orders.c.id.in_(bindparam("ids", expanding=True))  # rendered per execution
    with pytest.raises(ValueError, match="rendered at execution"):
        DriverStatement(one_connection, select(orders.c.id).where(expanding))


def test_a_database_that_cannot_be_reached_is_sqlalchemys_operational_error():
    # Port 1 on loopback: nothing listens, so the pool's new connection fails.
    engine = create_engine(normalize_database_url("postgresql://postgres@127.0.0.1:1/none"))
    try:
        with pytest.raises(OperationalError):  # what the app answers with a 503
            DriverStatement(engine, select(literal(1))).one_or_none({})
    finally:
        engine.dispose()


def test_a_disconnect_retires_every_connection_opened_before_it(pg_url):
    engine = create_engine(normalize_database_url(pg_url), pool_size=2, max_overflow=0)
    try:
        first, second = engine.raw_connection(), engine.raw_connection()
        stale = set()
        for pooled in (first, second):
            with pooled.driver_connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                stale.add(cursor.fetchone()[0])
            pooled.close()
        with create_engine(normalize_database_url(pg_url)).connect() as admin:
            for pid in stale:  # the server restarted, as far as both know
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        statement = DriverStatement(engine, select(text("pg_backend_pid()")))
        with pytest.raises(OperationalError):
            statement.one_or_none({})
        # The other stale connection is not handed out: both statements reconnect.
        assert statement.one_or_none({})[0] not in stale
        assert statement.one_or_none({})[0] not in stale
    finally:
        engine.dispose()
