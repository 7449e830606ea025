"""A database error, logged with the request it failed, does not list the statement's
parameters: an order's are its customer's name, email and phone. (What PostgreSQL's own
message quotes of a statement, psycopg2 having written the values into it, is another
matter: this error quotes nothing.)"""

import pytest
from sqlalchemy import String, bindparam, text
from sqlalchemy.exc import DBAPIError

from app.driver_statement import DriverStatement
from app.extensions import db

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
