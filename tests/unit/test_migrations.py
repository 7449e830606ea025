"""The schema is built only by Flask-Migrate revisions, and they match the models."""

import os
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

from app import create_app
from app.config import TestConfig, normalize_database_url
from tests.support import servers


def flask_db(*args: str, database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(servers.BIN / "flask"), "--app", "wsgi", "db", *args],
        cwd=servers.ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flask_db_upgrade_builds_the_schema_on_sqlite():
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'orders.db'}"
        result = flask_db("upgrade", database_url=url)
        assert result.returncode == 0, result.stderr
        tables = sa.inspect(sa.create_engine(url)).get_table_names()
        assert {"orders", "alembic_version"} <= set(tables)
        check = flask_db("check", database_url=url)
        assert check.returncode == 0, check.stdout + check.stderr


def test_postgresql_schema_matches_the_models(pg_url):
    # pg_url was built by `flask db upgrade` from the plain postgresql:// form users pass.
    assert pg_url.startswith("postgresql://")
    check = flask_db("check", database_url=pg_url)
    assert check.returncode == 0, check.stdout + check.stderr
    columns = {
        c["name"]
        for c in sa.inspect(sa.create_engine(normalize_database_url(pg_url))).get_columns("orders")
    }
    assert {"id", "order_number", "access_token_hash", "version", "payment_status"} <= columns


def test_embedded_default_is_a_sqlite_file_in_the_instance_folder():
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=None)
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    assert uri == f"sqlite:///{Path(app.instance_path) / 'orders.db'}"
    app.extensions["hub"].stop()


def test_an_explicit_sqlite_url_gets_sqlite_engine_options():
    # PostgreSQL pool sizing would make create_engine refuse an in-memory SQLite database.
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI="sqlite://")
    assert "pool_size" not in app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    app.extensions["hub"].stop()


def test_plain_postgres_urls_map_to_psycopg2():
    assert normalize_database_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert normalize_database_url("postgresql://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_the_db_commands_take_their_options_and_a_worker_never_loads_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    upgraded = flask_db("--directory", "migrations", "upgrade", database_url=url)
    assert upgraded.returncode == 0, upgraded.stderr
    current = flask_db("current", database_url=url)
    assert "(head)" in current.stdout, current.stdout + current.stderr
    # What a gunicorn worker imports: the app, and Alembic only once a db command runs.
    boot = "import sys, wsgi; print('alembic' in sys.modules, 'flask_migrate' in sys.modules)"
    result = subprocess.run(
        [str(servers.BIN / "python"), "-c", boot],
        cwd=servers.ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "False"], result.stdout + result.stderr
