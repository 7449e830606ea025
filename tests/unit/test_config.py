"""The settings: one definition, read when create_app runs, checked, documented in the README."""

import re
import subprocess
import sys
from dataclasses import fields

import pytest

from app import create_app
from app.config import ConfigError, Settings, TestConfig, markdown
from app.config.reader import sections_of, show_default
from app.config.sections import Database
from app.config.server import Server
from app.database import engine_options
from tests.support.servers import ROOT

SECTIONS = [cls for _, cls in sections_of(Settings)] + [Server]
SETTINGS = {item.metadata["env"]: item for cls in SECTIONS for item in fields(cls)}


def readme_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration (environment)\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_the_readme_lists_every_setting_once_with_its_default():
    rows = [row.split(" | ") for row in readme_table()]
    listed = [re.fullmatch(r"\| `(\w+)`", row[0]) for row in rows]
    names = [match.group(1) for match in listed if match]
    assert sorted(names) == sorted(SETTINGS), "run: python -m app.config"
    defaults = {m.group(1): row[2] for m, row in zip(listed, rows, strict=True) if m}
    assert defaults == {name: show_default(item) for name, item in SETTINGS.items()}


def test_the_readme_table_is_the_one_the_definition_prints():
    assert "\n".join(readme_table()) + "\n" == markdown(), "run: python -m app.config"


def test_every_setting_is_read_somewhere():
    sources = "\n".join(
        path.read_text()
        for path in [*(ROOT / "app").rglob("*.py"), ROOT / "gunicorn.conf.py"]
        if ROOT / "app" / "config" not in path.parents
    )
    # By its flat key in app.config, or in its typed section (`database.pool_size`).
    read = [
        (i.metadata["key"], f"{part}.{i.name}")
        for part, cls in sections_of(Settings)
        for i in fields(cls)
    ]
    read += [(item.metadata["env"], item.metadata["env"]) for item in fields(Server)]
    unread = [key for key, typed in read if not re.search(rf"\b({key}|{typed})\b", sources)]
    assert unread == []


def test_the_server_section_has_the_defaults_gunicorn_conf_py_applies():
    code = (
        "import runpy, json;"
        "c = runpy.run_path('gunicorn.conf.py');"
        "print(json.dumps([c[k] for k in ('bind', 'workers', 'worker_connections', 'timeout',"
        " 'graceful_timeout', 'keepalive', 'accesslog')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, text=True,
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    server = Server()
    assert eval(out.replace("null", "None")) == [
        f"0.0.0.0:{server.port}",
        server.web_concurrency,
        server.worker_connections,
        server.gunicorn_timeout,
        server.gunicorn_graceful_timeout,
        server.gunicorn_keepalive,
        server.access_log,
    ]
    assert server.bind is None


@pytest.fixture
def build(monkeypatch, redis_url):
    """In-process apps on in-memory SQLite; nothing they hold is started."""
    apps = []
    monkeypatch.setenv("REDIS_URL", redis_url)

    def build(**overrides):
        app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI="sqlite://", **overrides)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["hub"].stop()


def test_the_environment_is_read_when_create_app_runs_not_at_import(build, monkeypatch):
    # app.config was imported long before this (conftest.py); the value is set only now.
    monkeypatch.setenv("STATS_CACHE_TTL", "7")
    monkeypatch.setenv("ADMIN_TOKENS", "one, two,")
    app = build()
    assert app.config["STATS_CACHE_TTL"] == 7
    assert app.config["ADMIN_TOKENS"] == ["one", "two"]
    assert app.extensions["settings"].stats.cache_ttl == 7
    assert app.config["TESTING"] is True


def test_importing_checks_nothing_and_starting_names_the_bad_variables():
    code = (
        "import app.factory, app.config\n"
        "try:\n    app.factory.create_app()\n"
        "except app.config.ConfigError as exc:\n    print(exc)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "REDIS_POOL_SIZE": "abc", "LOG_FORMAT": "xml"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "LOG_FORMAT='xml': not one of text, json" in result.stdout
    assert "REDIS_POOL_SIZE='abc': not an integer" in result.stdout


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("REDIS_POOL_SIZE", "abc", "not an integer"),
        ("DATABASE_POOL_SIZE", "2.5", "not an integer"),
        ("WAITS_PER_CLIENT", "-1", "not an integer of 0 or more"),
        ("READYZ_TIMEOUT", "nan", "not a number of 0 or more"),
        ("REDIS_SHARDED_PUBSUB", "maybe", "not a flag"),
        ("LOG_LEVEL", "loud", "not one of DEBUG, INFO"),
    ],
)
def test_a_bad_value_is_an_error_naming_its_variable(name, value, error):
    with pytest.raises(ConfigError, match=re.escape(f"{name}={value!r}: {error}")):
        Settings.load({name: value})


@pytest.mark.parametrize(
    "environ, error",
    [
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go"),
        ({"REDIS_SENTINEL_MASTER": "orderwait"}, "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go"),
        (
            {"REDIS_SENTINELS": "sentinel-without-port", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS='sentinel-without-port': not host:port",
        ),
        (
            {
                "REDIS_SENTINELS": "10.0.0.1:26379",
                "REDIS_SENTINEL_MASTER": "m",
                "REDIS_URL": "rediss://:secret@primary/0",
            },
            "TLS to Sentinel-managed primaries is not supported",
        ),
    ],
    ids=["sentinels-alone", "master-alone", "no-port", "tls-downgrade"],
)
def test_a_wrong_sentinel_combination_is_an_error_at_start(environ, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        Settings.load(environ)


def test_a_bad_override_is_an_error_naming_its_key(build):
    with pytest.raises(ConfigError, match="WAITS_PER_CLIENT=1.5: not an integer"):
        build(WAITS_PER_CLIENT=1.5)


def test_values_are_parsed_by_type():
    settings = Settings.load(
        {
            "LOG_FORMAT": "JSON",
            "LOG_LEVEL": "debug",
            "REDIS_SHARDED_PUBSUB": "1",
            "DEV_SIMULATE_PROVIDER": "off",
            "CORS_ORIGINS": "https://a.example,https://b.example",
            "DATABASE_URL": "postgres://u@h/d",
            "HUB_CANARY_INTERVAL": "0.5",
        }
    )
    assert (settings.logging.format, settings.logging.level) == ("json", "DEBUG")
    assert settings.redis.sharded_pubsub and not settings.development.dev_simulate_provider
    assert settings.http.cors_origins == ("https://a.example", "https://b.example")
    assert settings.database.url == "postgresql+psycopg2://u@h/d"
    assert settings.realtime.hub_canary_interval == 0.5
    assert Settings.load({"DATABASE_URL": ""}).database.url is None
    assert Settings.load({}) == Settings()


def test_overrides_win_over_the_environment(build, monkeypatch):
    monkeypatch.setenv("STATS_CACHE_TTL", "7")
    monkeypatch.setenv("ORDER_CREATE_RATE_LIMIT", "5 per minute")
    app = build(STATS_CACHE_TTL=9, ORDER_CREATE_RATE_LIMIT="", SERVER_NAME="shop.example")
    assert app.config["STATS_CACHE_TTL"] == 9
    assert app.config["ORDER_CREATE_RATE_LIMIT"] == ""
    assert app.config["SERVER_NAME"] == "shop.example"  # no setting: set as given


def test_engine_options_come_from_the_database_section():
    database = Database(pool_size=7, max_overflow=2, connect_timeout=4)
    postgres = engine_options("postgresql+psycopg2://u@h/d", database)
    assert (postgres["pool_size"], postgres["max_overflow"]) == (7, 2)
    assert postgres["pool_pre_ping"] is False  # pinged when idle instead
    assert postgres["connect_args"]["connect_timeout"] == 4
    assert postgres["connect_args"]["keepalives"] == 1
    # Options given to create_app (a test's) stand in for the pool settings.
    given = engine_options("postgresql+psycopg2://u@h/d", database, {"pool_size": 5})
    assert given["pool_size"] == 5 and "max_overflow" not in given
    assert given["connect_args"]["connect_timeout"] == 4
    sqlite = engine_options("sqlite://", database)
    assert sqlite == {"pool_pre_ping": True, "connect_args": {"timeout": 15}}
