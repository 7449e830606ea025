"""How Redis is laid out (app/config/topology.py): REDIS_CLUSTER_NODES, REDIS_SENTINELS and
REDIS_URL together. A combination that cannot work is a ConfigError at start, naming what is
wrong, whether read from the environment or given to create_app."""

import re

import pytest

from app import create_app
from app.config import ConfigError, Settings, TestConfig
from app.config.topology import cluster_problem, host_port, sentinel_problem

NODES = "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002"


def refused(environ: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        Settings.load(environ)


# Through the settings, as create_app reads them


def test_cluster_nodes_are_read_as_a_list_of_addresses():
    settings = Settings.load(
        {"REDIS_CLUSTER_NODES": " 10.0.0.1:7000, redis-2:7001,", "REDIS_URL": "redis://:pw@c/0"}
    )
    assert settings.redis.cluster_nodes == ("10.0.0.1:7000", "redis-2:7001")
    assert settings.redis.sentinels == ()


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://:secret@cluster/0",
        "redis://user:secret@cluster",
        "redis://cluster/",
    ],
)
def test_cluster_nodes_with_a_plain_url_on_database_0_are_accepted(url):
    settings = Settings.load({"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": url})
    assert settings.redis.cluster_nodes == tuple(NODES.split(","))
    assert settings.redis.url == url


def test_cluster_nodes_with_sentinels_are_refused():
    refused(
        {
            "REDIS_CLUSTER_NODES": NODES,
            "REDIS_SENTINELS": "10.0.0.9:26379",
            "REDIS_SENTINEL_MASTER": "orderwait",
        },
        "REDIS_CLUSTER_NODES and REDIS_SENTINELS both set",
    )


def test_cluster_nodes_with_a_tls_url_are_refused():
    refused(
        {"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": "rediss://:secret@cluster/0"},
        "REDIS_CLUSTER_NODES with a rediss:// REDIS_URL",
    )


def test_cluster_nodes_with_a_unix_socket_url_are_refused():
    refused(
        {"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": "unix:///run/redis.sock"},
        "REDIS_CLUSTER_NODES with a unix:// REDIS_URL",
    )


@pytest.mark.parametrize("url", ["redis://cluster/1", "redis://:pw@cluster:6379/7"])
def test_cluster_nodes_with_a_database_other_than_0_are_refused(url):
    refused(
        {"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": url},
        "REDIS_CLUSTER_NODES with a database number in REDIS_URL",
    )


def test_cluster_nodes_with_a_database_given_as_a_query_are_refused():
    refused(
        {"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": "redis://cluster/?db=3"},
        "REDIS_CLUSTER_NODES with a database number in REDIS_URL",
    )


@pytest.mark.parametrize(
    "nodes, bad",
    [
        ("nohostport", "nohostport"),
        ("host:", "host:"),
        (":7000", ":7000"),
        ("host:port", "host:port"),
        ("10.0.0.1:7000,nohostport", "nohostport"),  # the bad one, not the first
    ],
)
def test_a_bad_cluster_node_address_is_refused_naming_it(nodes, bad):
    refused({"REDIS_CLUSTER_NODES": nodes}, f"REDIS_CLUSTER_NODES={bad!r}: not host:port")


def test_a_bad_cluster_setting_is_reported_with_the_other_bad_variables():
    with pytest.raises(ConfigError) as raised:
        Settings.load({"LOG_FORMAT": "xml", "REDIS_CLUSTER_NODES": "nohostport"})
    assert "LOG_FORMAT='xml'" in str(raised.value)
    assert "REDIS_CLUSTER_NODES='nohostport'" in str(raised.value)


@pytest.fixture
def build():
    """In-process apps on in-memory SQLite; on a cluster nothing is reached at start."""
    apps = []

    def build(**overrides):
        app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI="sqlite://", **overrides)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["hub"].stop()


@pytest.mark.parametrize(
    "overrides, error",
    [
        ({"REDIS_CLUSTER_NODES": "nohostport"}, "REDIS_CLUSTER_NODES='nohostport': not host:port"),
        (
            {"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": "rediss://cluster/0"},
            "REDIS_CLUSTER_NODES with a rediss:// REDIS_URL",
        ),
        (
            {"REDIS_CLUSTER_NODES": NODES, "REDIS_URL": "redis://cluster/2"},
            "a Redis Cluster has only database 0",
        ),
    ],
    ids=["bad-address", "tls", "database"],
)
def test_create_app_refuses_a_bad_cluster_setting(build, monkeypatch, overrides, error):
    monkeypatch.delenv("REDIS_CLUSTER_NODES", raising=False)
    monkeypatch.delenv("REDIS_SENTINELS", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    with pytest.raises(ConfigError, match=re.escape(error)):
        build(**overrides)


# The checks themselves


def test_no_cluster_nodes_is_no_cluster_problem_whatever_else_is_set():
    assert cluster_problem((), ("10.0.0.9:26379",), "rediss://primary/5") is None


def test_the_cluster_checks_come_in_order_sentinels_first():
    # Each message says what to change; the first that applies is the one given.
    both = cluster_problem(("bad",), ("10.0.0.9:26379",), "rediss://c/3")
    assert both.startswith("REDIS_CLUSTER_NODES and REDIS_SENTINELS both set")
    tls = cluster_problem(("bad",), (), "rediss://c/3")
    assert tls.startswith("REDIS_CLUSTER_NODES with a rediss:// REDIS_URL")
    database = cluster_problem(("bad",), (), "redis://c/3")
    assert database.startswith("REDIS_CLUSTER_NODES with a database number")
    assert (
        cluster_problem(("bad",), (), "redis://c/0") == "REDIS_CLUSTER_NODES='bad': not host:port"
    )
    assert cluster_problem(("10.0.0.1:7000",), (), "redis://c/0") is None


@pytest.mark.parametrize(
    "sentinels, master, url, problem",
    [
        ((), "", "rediss://primary/0", None),  # no Sentinel at all
        (("10.0.0.9:26379",), "orderwait", "redis://:pw@primary/3", None),
        (("10.0.0.9:26379",), "", "redis://primary/0", "go together"),
        ((), "orderwait", "redis://primary/0", "go together"),
        (("10.0.0.9:26379",), "m", "rediss://primary/0", "TLS to Sentinel-managed primaries"),
        (("10.0.0.9:26379", "sentinel-2"), "m", "redis://p/0", "REDIS_SENTINELS='sentinel-2'"),
    ],
    ids=["none", "good", "no-master", "no-sentinels", "tls", "bad-address"],
)
def test_sentinel_problem(sentinels, master, url, problem):
    found = sentinel_problem(sentinels, master, url)
    if problem is None:
        assert found is None
    else:
        assert problem in found


@pytest.mark.parametrize(
    "address, parsed",
    [("10.0.0.1:7000", ("10.0.0.1", 7000)), (" redis-1:6379 ", ("redis-1", 6379))],
)
def test_an_address_is_read_as_host_and_port(address, parsed):
    assert host_port(address) == parsed


@pytest.mark.parametrize("address", ["nohostport", "host:", ":7000", "host:port", "host:-1", ""])
def test_an_address_without_host_and_port_is_no_address(address):
    with pytest.raises(ValueError, match="not host:port"):
        host_port(address)
