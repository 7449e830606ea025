"""Fixtures of the API tests: an in-process app with an empty orders table, its test client,
and the app on each database."""

import pytest

from app.extensions import db


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        db.session.execute(db.text("DELETE FROM orders"))
        db.session.commit()
        db.session.remove()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_database_app(request, make_app, app, tmp_path):
    """The app on PostgreSQL, and on the embedded SQLite default."""
    if request.param == "postgresql":
        return app
    sqlite_app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'orders.db'}")
    with sqlite_app.app_context():
        db.create_all()
    return sqlite_app
