"""A database error, logged with the request it failed, does not list the statement's
parameters: an order's are its customer's name, email and phone. (What PostgreSQL's own
message quotes of a statement, psycopg2 having written the values into it, is another
matter: this error quotes nothing.)"""

import logging

import pytest
from sqlalchemy import String, bindparam, text
from sqlalchemy.exc import DBAPIError

from app.driver_statement import DriverStatement
from app.extensions import db
from app.responses import error_response

CUSTOMER = "Wambui Kariuki"
FAILING = text("SELECT 1 / 0 WHERE :name IS NOT NULL").bindparams(bindparam("name", type_=String))


def test_an_error_of_the_orm_hides_the_parameters(app):
    with app.app_context():
        with pytest.raises(DBAPIError) as raised:
            db.session.execute(FAILING, {"name": "Nyokabi"})
        db.session.rollback()
    assert "division by zero" in str(raised.value) and "Nyokabi" not in str(raised.value)


def test_an_error_of_a_driver_statement_hides_the_parameters(app):
    with app.app_context():
        with pytest.raises(DBAPIError) as raised:
            DriverStatement(db.engine, FAILING).one_or_none({"name": "Nyokabi"})
    assert "division by zero" in str(raised.value) and "Nyokabi" not in str(raised.value)


def test_the_log_of_an_unexpected_database_error_leaves_out_what_postgresql_quotes(app, caplog):
    """A unique violation's DETAIL quotes the row's value: the 500's log keeps the error's
    first line and where it was raised, not that."""
    with app.app_context():
        db.session.execute(text("CREATE TEMP TABLE people (name text UNIQUE)"))
        insert = text("INSERT INTO people VALUES (:name)")
        db.session.execute(insert, {"name": CUSTOMER})
        with pytest.raises(DBAPIError) as raised:
            db.session.execute(insert, {"name": CUSTOMER})  # the traceback shows this line
        db.session.rollback()
    assert CUSTOMER in str(raised.value)  # PostgreSQL's DETAIL, as psycopg2 gives it

    with caplog.at_level(logging.ERROR, logger="app.responses"):
        response = error_response(raised.value, "POST /api/orders")
    assert response.status == 500
    assert "POST /api/orders failed" in caplog.text
    assert "duplicate key value violates unique constraint" in caplog.text
    assert "test_database_errors.py" in caplog.text  # the traceback's frames
    assert CUSTOMER not in caplog.text
