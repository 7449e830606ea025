"""Every use of the limits library beyond its documented API, in one place.

Verified on limits 5.8.0 (VERIFIED_LIMITS below), the version the project pins;
tests/unit/test_limits_adapter.py fails when an internal used here changes.

What is used, and why: on a Redis Cluster the request-rate limits must count through the
worker's own cluster client. limits' RedisClusterStorage builds a RedisCluster of its own
in its constructor, which connects at once: a worker could not start while the cluster is
away, and would hold a second set of connections to every node. SharedClusterStorage is
that storage with the client handed in; its constructor sets the attributes RedisStorage's
methods read (`storage`, `key_prefix`, `target_server`, `dependency`) and registers the
scripts through `initialize_storage`, as RedisClusterStorage's own constructor does.
"""

from __future__ import annotations

from limits.storage import RedisClusterStorage, Storage
from limits.storage.redis import RedisStorage

VERIFIED_LIMITS = ((5, 8, 0), (5, 8, 0))

SCHEME = "orderwait+cluster"


class SharedClusterStorage(RedisClusterStorage):
    """RedisClusterStorage on a cluster client of the caller's, at `orderwait+cluster://`."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str, client, wrap_exceptions: bool = False, **options):
        self.key_prefix = RedisStorage.PREFIX
        self.storage = client
        self.target_server = "redis"
        self.dependency = self.dependencies["redis"].module
        self.initialize_storage(uri)
        Storage.__init__(self, uri, wrap_exceptions, **options)
