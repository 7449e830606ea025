"""PostgreSQL connections that died while pooled (the server restarted, or ended its
backends): a unit of work whose first statement meets one runs again on a fresh
connection; a failure after a statement succeeded on the connection is never run again."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from app.database import died_while_pooled, retry_if_died_while_pooled
from app.driver_statement import DriverStatement
from app.extensions import db
from app.orders import reads
from tests.support.helpers import create_order
from tests.support.postgres import terminate_backends


@pytest.fixture
def app(make_app):
    # Idle pings would replace a dead pooled connection first: only the retry is under test.
    return make_app(DATABASE_PING_AFTER_IDLE=3600)


def pool_dropped(pg_url: str) -> None:
    """The pool holds a live connection, which PostgreSQL then ends."""
    db.session.execute(text("SELECT 1"))
    db.session.remove()
    assert terminate_backends(pg_url) >= 1


def test_the_first_statement_on_a_dead_pooled_connection_is_marked(app, pg_url):
    with app.app_context():
        pool_dropped(pg_url)
        with pytest.raises(OperationalError) as orm:
            db.session.execute(text("SELECT 1"))
        db.session.rollback()

        pool_dropped(pg_url)
        driver = DriverStatement(db.engine, select(text("1")))
        with pytest.raises(OperationalError) as on_driver:
            driver.one_or_none({})
    assert died_while_pooled(orm.value) and died_while_pooled(on_driver.value)


def test_a_read_meeting_a_dead_pooled_connection_runs_again(app, pg_url):
    order = create_order(app.test_client())
    with app.app_context():
        pool_dropped(pg_url)
        latest = reads.latest_versions([order["orderId"]])
    assert latest[order["orderId"]][0] == 1


@pytest.mark.parametrize("then", ["statement", "commit"])
def test_a_failure_after_a_statement_succeeded_is_not_run_again(app, pg_url, then):
    """The connection dies between two statements of one checkout, or before its COMMIT:
    something was done on it, so whether it committed is unknown."""
    runs = []

    @retry_if_died_while_pooled
    def unit() -> None:
        runs.append(db.session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert terminate_backends(pg_url) >= 1  # this unit's own connection among them
        if then == "statement":
            db.session.execute(text("SELECT 1"))
        else:
            db.session.commit()

    with app.app_context():
        with pytest.raises(OperationalError) as raised:
            unit()
        db.session.rollback()
    assert len(runs) == 1
    assert not died_while_pooled(raised.value)


def test_a_request_whose_connection_dies_before_its_end_still_gets_its_answer(app, pg_url):
    """The session's connection dies after the request's statements ran (a restart, a
    pooler recycling it): the end of the request, which rolls the session back, must not
    turn the answer into a 500, and the next request meets a usable pool."""

    @app.get("/test-dies-before-teardown")
    def dies_before_teardown():
        db.session.execute(text("SELECT 1"))  # a transaction is open on the connection
        assert terminate_backends(pg_url) >= 1
        return {"ok": True}

    client = app.test_client()
    answer = client.get("/test-dies-before-teardown")
    assert (answer.status_code, answer.get_json()) == (200, {"ok": True})
    with app.app_context():
        assert db.session.execute(text("SELECT 1")).scalar() == 1
