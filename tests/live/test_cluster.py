"""A Redis Cluster, real (three primaries and three replicas on loopback): commands follow
each key's slot, every order channel is subscribed on the primary serving its slot only, and
a primary killed or a slot migrated under held waits loses none of them."""

import subprocess
import time

import gevent
import pytest
import redis
import requests

from tests.support.cluster import ClusterSetup
from tests.support.live import create, pay
from tests.support.live import wait as wait_live
from tests.support.servers import eventually

WAITS = 60
SHARDS = 3


@pytest.fixture(scope="module")
def shared_cluster():
    """For the tests that change nothing in the cluster's layout."""
    setup = ClusterSetup(SHARDS)
    yield setup
    setup.stop()


@pytest.fixture
def cluster():
    """A cluster of the test's own, for the tests that kill or move things."""
    setup = ClusterSetup(SHARDS)
    yield setup
    setup.stop()


def hub(server) -> dict:
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]


def start(live_server, cluster, workers: int = 1):
    server = live_server(
        workers=workers,
        # On a cluster the URL gives only the password: its host is never asked.
        REDIS_URL="redis://cluster/0",
        REDIS_CLUSTER_NODES=cluster.addresses,
    )
    eventually(lambda: hub(server)["connected"], 15, "the hub on every primary")
    return server


def channel(order: dict) -> str:
    return f"order:{{{order['orderId']}}}:status"


def orders_on_every_shard(server, cluster, per_shard: int = 2) -> list[dict]:
    """Orders whose channels fall on each primary, `per_shard` of each."""
    wanted = {port: per_shard for port in cluster.primaries()}
    chosen = []
    for _ in range(200):
        if not any(wanted.values()):
            return chosen
        order = create(server)
        owner = cluster.primary_of(channel(order))
        if wanted[owner]:
            wanted[owner] -= 1
            chosen.append(order)
    raise AssertionError(f"no orders landed on some shards: {wanted}")


def answered(waits) -> list[dict | None]:
    return [w.value.json() if w.ready() and w.value is not None else None for w in waits]


def assert_all_completed(orders, waits) -> list[dict]:
    answers = answered(waits)
    lost = [o["orderId"] for o, a in zip(orders, answers, strict=True) if a is None]
    assert not lost, f"{len(lost)} of {len(orders)} waits never answered"
    for order, answer in zip(orders, answers, strict=True):
        assert answer["orderId"] == order["orderId"]
        assert (answer["changed"], answer["paymentStatus"]) == (True, "completed")
    return answers


def hub_clients(cluster) -> dict[int, list[str]]:
    """The hub's connections on each node, by client name."""
    return {
        node.port: [
            c["name"] for c in node.client().client_list() if c["name"].startswith("orderwait:hub")
        ]
        for node in cluster.alive()
    }


def test_waits_on_every_shard_are_answered_by_pubsub_across_two_workers(
    live_server, shared_cluster
):
    server = start(live_server, shared_cluster, workers=2)
    eventually(lambda: hub(server)["connected"], 15, "both workers' hubs")
    orders = orders_on_every_shard(server, shared_cluster)
    # Twice each, so both workers (the kernel spreads connections) hold waits of each shard.
    held = [gevent.spawn(wait_live, server, order) for order in orders for _ in range(2)]
    gevent.sleep(1.0)
    for order in orders:
        assert pay(server, order).status_code == 200
    gevent.joinall(held, timeout=15)
    answers = assert_all_completed([o for o in orders for _ in range(2)], held)
    assert {a["source"] for a in answers} == {"redis"}


def test_each_order_channel_is_subscribed_on_its_own_primary_only(live_server, shared_cluster):
    server = start(live_server, shared_cluster)
    orders = orders_on_every_shard(server, shared_cluster)
    held = [gevent.spawn(wait_live, server, order) for order in orders]
    eventually(lambda: hub(server)["parked"] == len(orders), 10, "the waits held")

    for node in shared_cluster.alive():
        subscribed = set(node.client().execute_command("PUBSUB SHARDCHANNELS", "order:*"))
        mine = {channel(o) for o in orders if shared_cluster.primary_of(channel(o)) == node.port}
        # Replicas hold none; each primary those of its own slots, no other.
        assert {c for c in subscribed if c in {channel(o) for o in orders}} == mine, node.port

    # shards + 1 pub/sub connections, whatever the number of waits; a canary on each
    # primary's connection, in that primary's slots.
    names = [name for names in hub_clients(shared_cluster).values() for name in names]
    assert len(names) == SHARDS + 1, hub_clients(shared_cluster)
    for port in shared_cluster.primaries():
        client = redis.Redis(port=port, decode_responses=True)
        canaries = client.execute_command("PUBSUB SHARDCHANNELS", "hub:canary:*")
        assert len(canaries) == 1, (port, canaries)
        assert shared_cluster.primary_of(canaries[0]) == port
    for order in orders:
        assert pay(server, order).status_code == 200
    gevent.joinall(held, timeout=15)
    assert_all_completed(orders, held)


def test_a_worker_holds_shards_plus_one_pubsub_connections_and_a_bounded_command_pool(
    live_server, shared_cluster
):
    server = start(live_server, shared_cluster)
    orders = [create(server) for _ in range(30)]
    held = [gevent.spawn(wait_live, server, order) for order in orders]
    eventually(lambda: hub(server)["parked"] == len(orders), 10, "the waits held")
    for order in orders:
        pay(server, order)
    gevent.joinall(held, timeout=15)
    assert_all_completed(orders, held)
    by_name: dict[str, int] = {}
    for node in shared_cluster.alive():
        for client in node.client().client_list():
            if client["name"].startswith("orderwait:"):
                by_name[client["name"]] = by_name.get(client["name"], 0) + 1
    pool_size = 3  # REDIS_POOL_SIZE's default, per node
    assert by_name.get("orderwait:hub") == SHARDS + 1, by_name
    assert by_name.get("orderwait:cmd", 0) <= pool_size * SHARDS, by_name
    print(f"\nRedis connections of one worker on a {SHARDS}-shard cluster: {by_name}")
    # Quiet, every canary echoes (0.5 s apart here): no connection is ever dropped.
    gevent.sleep(3)
    stats = hub(server)
    assert (stats["connected"], stats["reconnects"]) == (True, 0), stats


def test_a_primary_killed_under_held_waits_is_replaced_and_no_wait_is_lost(live_server, cluster):
    server = start(live_server, cluster)
    orders = [create(server) for _ in range(WAITS)]
    waits = [gevent.spawn(wait_live, server, order, timeout_ms=30_000) for order in orders]
    eventually(lambda: hub(server)["parked"] == WAITS, 15, f"{WAITS} waits held")

    victim = cluster.primary_of(channel(orders[0]))
    replica = cluster.replica_of(victim)
    on_victim = [o for o in orders if cluster.primary_of(channel(o)) == victim]
    cluster.node(victim).stop()  # kill -9
    killed = time.monotonic()
    # Paid while the shard has no primary: the database is the truth, the hub polls it.
    during, after = orders[: WAITS // 2], orders[WAITS // 2 :]
    payments = [gevent.spawn(pay, server, order) for order in during]
    gevent.joinall(payments, timeout=20, raise_error=True)
    assert [p.value.status_code for p in payments] == [200] * len(during)

    eventually(lambda: replica in cluster.primaries(), 20, "the replica promoted")
    promoted = time.monotonic()
    eventually(
        lambda: (lambda h: h["connected"] and f"127.0.0.1:{replica}" in h["primary"])(hub(server)),
        15,
        "the hub on the promoted primary",
    )
    back_on_pubsub = time.monotonic()
    for order in after:
        assert pay(server, order).status_code == 200
    gevent.joinall(waits, timeout=15)
    delivered = time.monotonic()

    answers = assert_all_completed(orders, waits)
    # Those paid after the failover were told by pub/sub, the promoted primary's included.
    assert {a["source"] for a in answers[WAITS // 2 :]} == {"redis"}
    assert any(o in on_victim for o in after), "no wait of the killed shard was paid after"
    stats = hub(server)
    assert stats["primaryChanges"] >= 1
    print(
        f"\nCluster failover, {WAITS} held waits ({len(on_victim)} on the killed primary): "
        f"promoted {promoted - killed:.2f} s after the kill; hub on the promoted primary "
        f"{back_on_pubsub - promoted:.2f} s after; last answer "
        f"{delivered - back_on_pubsub:.2f} s after that; waits lost 0"
    )


def test_a_slot_migrated_under_held_waits_loses_none(live_server, cluster):
    server = start(live_server, cluster)
    orders = [create(server) for _ in range(WAITS)]
    waits = [gevent.spawn(wait_live, server, order, timeout_ms=30_000) for order in orders]
    eventually(lambda: hub(server)["parked"] == WAITS, 15, f"{WAITS} waits held")

    source = cluster.primary_of(channel(orders[0]))
    target = next(port for port in cluster.primaries() if port != source)
    moved = [o for o in orders if cluster.primary_of(channel(o)) == source]
    slot_of = cluster.client().keyslot
    source_slots = {
        slot for start, end in cluster.primaries()[source] for slot in range(start, end + 1)
    }
    node_ids = {node["port"]: node["id"] for shard in cluster.shards() for node in shard["nodes"]}
    # Half of the source's slots, so half of its waits' channels move, under load.
    payments = [gevent.spawn(pay, server, order) for order in orders[: WAITS // 2]]
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "reshard",
            f"127.0.0.1:{source}",
            "--cluster-from",
            node_ids[source],
            "--cluster-to",
            node_ids[target],
            "--cluster-slots",
            "2730",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    gevent.joinall(payments, timeout=20, raise_error=True)
    now_elsewhere = [o for o in moved if cluster.primary_of(channel(o)) == target]
    assert now_elsewhere, "the reshard moved no watched channel"
    eventually(lambda: hub(server)["connected"], 15, "the hub back on every primary")
    for order in orders[WAITS // 2 :]:
        assert pay(server, order).status_code == 200
    gevent.joinall(waits, timeout=15)
    assert_all_completed(orders, waits)
    # A new wait on a moved slot is subscribed on the new owner, and told from there.
    order = next(
        o
        for o in (create(server) for _ in range(400))
        if cluster.primary_of(channel(o)) == target and slot_of(channel(o)) in source_slots
    )
    fresh = gevent.spawn(wait_live, server, order)
    eventually(lambda: hub(server)["parked"] == 1, 10, "a new wait held")
    owner = redis.Redis(port=target, decode_responses=True)
    assert channel(order) in owner.execute_command("PUBSUB SHARDCHANNELS", "order:*")
    assert pay(server, order).status_code == 200
    assert fresh.get(timeout=10).json()["source"] == "redis"
