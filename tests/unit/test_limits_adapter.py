"""The limits internals app/limits_adapter.py relies on are still there, and its storage
counts through the client it is handed.

A failure here means limits changed under the adapter: re-verify SharedClusterStorage
against the new release (and widen VERIFIED_LIMITS) before moving the pin in
requirements.txt.
"""

import ast
import inspect
import re
import textwrap
import time

import limits
import pytest
import redis
from limits.storage import RedisClusterStorage, Storage, storage_from_string
from limits.storage.redis import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

from app.limits_adapter import SCHEME, VERIFIED_LIMITS, SharedClusterStorage
from app.realtime.cluster import ClusterCommands

FIVE_A_MINUTE = limits.parse("5/minute")


def version(text: str) -> tuple[int, int, int]:
    major, minor, patch = re.match(r"(\d+)\.(\d+)\.(\d+)", text).groups()
    return int(major), int(minor), int(patch)


class UnreachableCluster:
    """A ClusterCommands build that fails as RedisCluster's does when no node answers."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        raise RedisClusterException("Redis Cluster cannot be connected.")


def self_assignments(function) -> set[str]:
    """The attributes `function` sets on self (`self.x = ...`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {
        target.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


# The installed release and the internals


def test_limits_is_a_verified_release():
    low, high = VERIFIED_LIMITS
    assert low <= version(limits.__version__) <= high, (
        f"limits {limits.__version__} is outside the adapter's verified range {VERIFIED_LIMITS}"
    )


def test_the_storage_is_limits_redis_cluster_storage_at_its_own_scheme():
    assert issubclass(SharedClusterStorage, RedisClusterStorage)
    assert issubclass(RedisClusterStorage, RedisStorage)
    assert SharedClusterStorage.STORAGE_SCHEME == [SCHEME]
    assert SCHEME not in RedisClusterStorage.STORAGE_SCHEME


def test_the_key_prefix_and_the_redis_dependency_are_where_the_adapter_reads_them():
    assert RedisStorage.PREFIX == "LIMITS"
    storage = storage_from_string(SCHEME + "://", client=ClusterCommands(UnreachableCluster()))
    assert storage.dependencies["redis"].module is redis
    assert storage.dependency is redis
    assert storage.key_prefix == RedisStorage.PREFIX
    assert storage.target_server == "redis"
    assert storage.base_exceptions is redis.RedisError
    assert storage.wrap_exceptions is False  # set by Storage.__init__, read on every error


def test_the_adapter_sets_every_attribute_limits_own_constructor_sets():
    # RedisClusterStorage.__init__ is replaced, not called: an attribute it starts setting
    # would be missing from ours.
    replaced = self_assignments(RedisClusterStorage.__init__)
    assert replaced == {"key_prefix", "storage", "target_server", "dependency"}
    assert replaced <= self_assignments(SharedClusterStorage.__init__)


def test_limits_constructor_still_registers_the_scripts_and_then_initializes_storage():
    source = inspect.getsource(RedisClusterStorage.__init__)
    assert "self.initialize_storage(uri)" in source
    assert "super(RedisStorage, self).__init__(uri, wrap_exceptions, **options)" in source
    assert list(inspect.signature(Storage.__init__).parameters)[:3] == [
        "self",
        "uri",
        "wrap_exceptions",
    ]


def test_initialize_storage_registers_every_script_on_the_handed_client():
    build = UnreachableCluster()
    client = ClusterCommands(build)
    storage = storage_from_string(SCHEME + "://", client=client)
    scripts = [name for name in vars(storage) if name.startswith("lua_")]
    assert {"lua_incr_expire", "lua_moving_window", "lua_sliding_window"} <= set(scripts)
    for name in scripts:
        script = getattr(storage, name)
        assert isinstance(script, Script) and script.registered_client is client, name
    assert build.calls == 0


def test_get_connection_returns_the_storage_attribute():
    storage = object.__new__(SharedClusterStorage)  # no constructor: the attribute alone
    storage.storage = client = object()
    assert storage.get_connection() is client
    assert storage.get_connection(readonly=True) is client


@pytest.mark.parametrize("method", ["incr", "get", "get_expiry", "clear", "check"])
def test_the_counting_methods_are_redis_storages_and_reach_redis_through_the_connection(method):
    # limits wraps them again in every subclass (its error wrapping): compare what is inside.
    ours = inspect.unwrap(getattr(SharedClusterStorage, method))
    assert ours is inspect.unwrap(getattr(RedisStorage, method))
    source = inspect.getsource(ours)
    assert "self.storage" not in source
    through = "self.lua_incr_expire(" if method == "incr" else "self.get_connection("
    assert through in source


# Behaviour, with no server


def test_the_storage_is_made_without_touching_the_network():
    build = UnreachableCluster()
    client = ClusterCommands(build)
    storage = storage_from_string(SCHEME + "://", client=client)
    assert isinstance(storage, SharedClusterStorage)
    assert storage.storage is client
    assert build.calls == 0


def test_a_hit_while_the_cluster_is_unreachable_raises_a_redis_error():
    # A RedisError is what Flask-Limiter's in-memory fallback takes for the storage down.
    build = UnreachableCluster()
    storage = storage_from_string(SCHEME + "://", client=ClusterCommands(build))
    with pytest.raises(redis.RedisError):
        FixedWindowRateLimiter(storage).hit(FIVE_A_MINUTE, "client")
    assert build.calls == 1


def test_the_health_check_while_the_cluster_is_unreachable_answers_false():
    # Flask-Limiter polls check() to leave its fallback: it must answer, not raise.
    storage = storage_from_string(SCHEME + "://", client=ClusterCommands(UnreachableCluster()))
    assert storage.check() is False


# Behaviour, on the shared (single) Redis: the storage counts through the client handed in.


@pytest.fixture
def plain_client(redis_client, redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_hits_are_counted_through_the_handed_client(plain_client, redis_client):
    storage = storage_from_string(SCHEME + "://", client=plain_client)
    limiter = FixedWindowRateLimiter(storage)
    assert [limiter.hit(FIVE_A_MINUTE, "1.2.3.4") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.hit(FIVE_A_MINUTE, "5.6.7.8")  # another client, another count
    (key,) = [k for k in redis_client.keys("LIMITS:*") if "1.2.3.4" in k]
    assert redis_client.get(key) == "6"
    assert 0 < redis_client.ttl(key) <= 60
    stats = limiter.get_window_stats(FIVE_A_MINUTE, "1.2.3.4")
    assert stats.remaining == 0 and stats.reset_time > time.time()
    assert storage.check() is True
    limiter.clear(FIVE_A_MINUTE, "1.2.3.4")
    assert limiter.hit(FIVE_A_MINUTE, "1.2.3.4")


def test_scripts_registered_while_unreachable_count_once_the_client_is_built(
    plain_client, redis_client
):
    # A worker starts with the cluster away, the cluster comes back: the limiter's scripts,
    # registered at start, then run on the client built at last (a plain Redis client
    # stands in for RedisCluster: the scripts are called through the same methods).
    calls = []

    def build():
        calls.append(1)
        if len(calls) == 1:
            raise RedisClusterException("Redis Cluster cannot be connected.")
        return plain_client

    client = ClusterCommands(build)
    client.RETRY_AFTER = 0.05
    limiter = FixedWindowRateLimiter(storage_from_string(SCHEME + "://", client=client))
    with pytest.raises(redis.RedisError):
        limiter.hit(FIVE_A_MINUTE, "1.2.3.4")
    time.sleep(0.1)
    assert limiter.hit(FIVE_A_MINUTE, "1.2.3.4")
    assert [redis_client.get(k) for k in redis_client.keys("LIMITS:*")] == ["1"]
    assert len(calls) == 2
