"""A Redis Cluster's layout and command client (app/realtime/cluster.py), with no server:
which primary serves an order channel's slot, how a CLUSTER SHARDS reply is read, and how
the command client behaves while the cluster cannot be reached."""

import hashlib
import time
import uuid

import pytest
import redis
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from app.realtime.cluster import ClusterCommands, Shards, parse_shards, read_shards
from tests.support.servers import free_port

# The layout `redis-cli --cluster create` gives three primaries.
A, B, C = "10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"
THREE = Shards({A: [(0, 5460)], B: [(5461, 10922)], C: [(10923, 16383)]})


def order_channel(order_id: uuid.UUID) -> str:
    return f"order:{{{order_id}}}:status"


def slot_of(channel: str) -> int:
    return key_slot(channel.encode())


def channel_in_slot(slot: int) -> str:
    """An order channel (a uuid order id, as the service makes) whose slot is `slot`."""
    for n in range(1_000_000):
        channel = order_channel(uuid.UUID(int=n))
        if slot_of(channel) == slot:
            return channel
    raise AssertionError(f"no order channel found in slot {slot}")


# Shards.owner


def test_owner_is_the_primary_serving_the_slot_redis_computes_for_the_channel():
    owners = set()
    for n in range(300):
        channel = order_channel(uuid.uuid5(uuid.NAMESPACE_URL, str(n)))
        slot = slot_of(channel)
        expected = A if slot <= 5460 else B if slot <= 10922 else C
        assert THREE.owner(channel) == expected, (channel, slot)
        owners.add(expected)
    assert owners == {A, B, C}


@pytest.mark.parametrize(
    "slot, owner",
    [(0, A), (5460, A), (5461, B), (10922, B), (10923, C), (16383, C)],
    ids=["first-slot", "end-of-A", "start-of-B", "end-of-B", "start-of-C", "last-slot"],
)
def test_the_first_and_last_slot_of_every_range_belong_to_it(slot, owner):
    channel = channel_in_slot(slot)
    assert THREE.owner(channel) == owner


def test_the_hash_tag_alone_decides_the_owner():
    order_id = uuid.uuid5(uuid.NAMESPACE_URL, "hash-tag")
    owner = THREE.owner(order_channel(order_id))
    assert THREE.owner(f"order:{{{order_id}}}:other") == owner
    assert THREE.owner(str(order_id)) == owner


def test_a_slot_no_online_primary_serves_has_no_owner():
    channel = order_channel(uuid.uuid5(uuid.NAMESPACE_URL, "gap"))
    slot = slot_of(channel)
    assert 0 < slot < 16383
    around = Shards({A: [(0, slot - 1)], B: [(slot + 1, 16383)]})
    assert around.owner(channel) is None
    assert Shards({A: [(0, slot)]}).owner(channel) == A  # the gap's neighbours still own
    assert Shards({B: [(slot, 16383)]}).owner(channel) == B
    assert Shards().owner(channel) is None


def test_a_primary_with_several_ranges_owns_each_of_them():
    shards = Shards({A: [(0, 99), (200, 16383)], B: [(100, 199)]})
    assert shards.owner(channel_in_slot(99)) == A
    assert shards.owner(channel_in_slot(100)) == B
    assert shards.owner(channel_in_slot(199)) == B
    assert shards.owner(channel_in_slot(200)) == A


# Shards.complete


def test_the_layout_is_complete_when_every_slot_has_a_primary():
    assert THREE.complete
    assert Shards({A: [(0, 16383)]}).complete
    assert Shards({A: [(0, 99), (200, 16383)], B: [(100, 199)]}).complete


@pytest.mark.parametrize(
    "primaries",
    [
        {},
        {A: [(0, 5460)], C: [(10923, 16383)]},  # a primary's slots missing
        {A: [(0, 16382)]},  # the last slot
        {A: [(1, 16383)]},  # the first slot
        {A: [(0, 8000)], B: [(8002, 16383)]},  # one slot in the middle
    ],
    ids=["empty", "a-shard", "last-slot", "first-slot", "one-in-the-middle"],
)
def test_the_layout_is_incomplete_while_a_slot_has_no_primary(primaries):
    assert not Shards(primaries).complete


def test_the_layout_is_incomplete_while_a_slot_has_no_primary_even_if_others_overlap():
    # Two primaries both reported for the first half (a stale view during a failover),
    # none for the second half.
    assert not Shards({A: [(0, 8191)], B: [(0, 8191)]}).complete


# Shards.channel_on


@pytest.mark.parametrize("address", [A, B, C])
def test_a_canary_channel_falls_in_a_slot_its_primary_serves(address):
    channel = THREE.channel_on(address, "hub:canary:abc")
    assert channel.startswith("hub:canary:abc:")
    assert THREE.owner(channel) == address


@pytest.mark.parametrize("slot", [0, 5460, 16383])
def test_a_primary_serving_a_single_slot_gets_a_canary_channel_in_it(slot):
    shards = Shards({A: [(slot, slot)]})
    assert slot_of(shards.channel_on(A, "canary")) == slot


def test_a_primary_serving_any_single_slot_gets_a_canary_channel_in_it():
    shards = Shards({A: [(43, 43)], B: [(0, 42), (44, 16383)]})
    assert slot_of(shards.channel_on(A, "canary")) == 43


def test_an_address_serving_no_slot_gets_no_canary_channel():
    with pytest.raises(ValueError, match="10.9.9.9:7000 serves no slot"):
        THREE.channel_on("10.9.9.9:7000", "canary")
    with pytest.raises(ValueError, match="serves no slot"):
        Shards().channel_on(A, "canary")


# Shards equality


def test_layouts_are_equal_when_each_primary_serves_the_same_ranges():
    assert Shards({A: [(200, 300), (0, 100)], B: [(101, 199)]}) == Shards(
        {B: [(101, 199)], A: [(0, 100), (200, 300)]}
    )
    assert Shards() == Shards({})
    assert THREE != Shards({A: [(0, 5460)], B: [(5461, 10922)], "10.0.0.9:7002": [(10923, 16383)]})
    assert THREE != Shards({A: [(0, 5461)], B: [(5462, 10922)], C: [(10923, 16383)]})
    assert THREE != THREE.primaries  # a dict of the same is no layout


# parse_shards: replies as redis-py returns them, from a Redis 7 cluster of three primaries
# with a replica each.


def node(port: int, role: str, health: str = "online", ip: str | None = None) -> dict:
    return {
        "id": hashlib.sha1(str(port).encode()).hexdigest(),
        "port": port,
        "ip": ip if ip is not None else f"10.0.0.{port - 6999}",
        "endpoint": ip if ip is not None else f"10.0.0.{port - 6999}",
        "role": role,
        "replication-offset": 1234,
        "health": health,
    }


def shard(slots: list[int], *nodes: dict) -> dict:
    return {"slots": slots, "nodes": list(nodes)}


THREE_REPLY = [
    shard([0, 5460], node(7000, "master"), node(7003, "replica")),
    shard([5461, 10922], node(7004, "replica"), node(7001, "master")),
    shard([10923, 16383], node(7002, "master"), node(7005, "replica")),
]


def as_is(text: str):
    return text


def as_bytes(text: str) -> bytes:
    return text.encode()


def fields(item: dict, key, value, nested) -> list[tuple]:
    return [
        (
            key(name),
            [nested(n, key, value) for n in field]
            if name == "nodes"
            else value(field)
            if isinstance(field, str)
            else field,
        )
        for name, field in item.items()
    ]


def flat(item: dict, key=as_is, value=as_is) -> list:
    """A map as RESP2 sends it (a flat key, value list), nodes included."""
    return [part for pair in fields(item, key, value, flat) for part in pair]


def resp3(item: dict, key=as_is, value=as_is) -> dict:
    """A map as RESP3 sends it (a dict to redis-py), nodes included."""
    return dict(fields(item, key, value, resp3))


def test_a_resp2_reply_of_flat_pairs_is_read():
    # What read_shards gets: RESP2, decode_responses=True.
    reply = [flat(item) for item in THREE_REPLY]
    assert reply[0][:2] == ["slots", [0, 5460]]
    assert parse_shards(reply) == THREE


def test_a_resp3_reply_of_maps_is_read():
    reply = [resp3(item) for item in THREE_REPLY]
    assert isinstance(reply[0], dict) and isinstance(reply[0]["nodes"][0], dict)
    assert parse_shards(reply) == THREE


def test_keys_given_as_bytes_are_read():
    # Bytes keys, decoded values: the mix parse_shards decodes keys for (redis-py itself
    # gives either all text or all bytes: see the next test).
    reply = [flat(item, key=as_bytes) for item in THREE_REPLY]
    assert reply[0][0] == b"slots" and reply[0][3][0][0] == b"id"
    assert reply[0][3][0][-1] == "online"
    assert parse_shards(reply) == THREE
    assert parse_shards([resp3(item, key=as_bytes) for item in THREE_REPLY]) == THREE


@pytest.mark.parametrize("shape", [flat, resp3], ids=["resp2", "resp3"])
def test_a_reply_read_without_decoding_is_read(shape):
    reply = [shape(item, key=as_bytes, value=as_bytes) for item in THREE_REPLY]
    assert parse_shards(reply) == THREE


@pytest.mark.parametrize("health", ["failed", "fail", "loading"])
def test_a_primary_that_is_not_online_is_left_out(health):
    # A failover: the old primary still reported as a master, failed; its replica promoted.
    reply = [
        shard([0, 5460], node(7000, "master", health), node(7003, "master")),
        *THREE_REPLY[1:],
    ]
    shards = parse_shards(reply)
    assert shards.primaries == {
        "10.0.0.4:7003": ((0, 5460),),
        B: ((5461, 10922),),
        C: ((10923, 16383),),
    }
    assert shards.complete


def test_a_failed_primary_not_yet_replaced_leaves_its_slots_without_owner():
    reply = [
        shard([0, 5460], node(7000, "master", "failed"), node(7003, "replica")),
        *THREE_REPLY[1:],
    ]
    shards = parse_shards(reply)
    assert "10.0.0.1:7000" not in shards.primaries and "10.0.0.4:7003" not in shards.primaries
    assert not shards.complete
    assert shards.owner(channel_in_slot(100)) is None
    assert shards.owner(channel_in_slot(6000)) == B


def test_replicas_and_primaries_without_slots_serve_nothing():
    reply = [*THREE_REPLY, shard([], node(7006, "master"), node(7007, "replica"))]
    shards = parse_shards(reply)
    assert shards == THREE
    assert set(shards.primaries) == {A, B, C}


def test_a_slots_list_of_several_ranges_gives_each_range():
    reply = [
        shard([0, 100, 200, 300], node(7000, "master")),
        shard([101, 199, 301, 16383], node(7001, "master")),
    ]
    shards = parse_shards([flat(item) for item in reply])
    assert shards.primaries == {A: ((0, 100), (200, 300)), B: ((101, 199), (301, 16383))}
    assert shards.complete


def test_a_node_without_an_ip_is_addressed_by_its_endpoint():
    hostname = node(7000, "master", ip="")
    hostname["endpoint"] = "redis-1"
    shards = parse_shards([shard([0, 16383], hostname)])
    assert shards.primaries == {"redis-1:7000": ((0, 16383),)}


# read_shards


def test_reading_the_layout_from_nodes_that_refuse_fails_at_once_naming_the_last():
    ports = [free_port() for _ in range(3)]  # nobody listens on them
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError) as raised:
        read_shards([("127.0.0.1", port) for port in ports], socket_connect_timeout=1)
    assert time.monotonic() - started < 1.0, "a refusing node was retried with a backoff"
    message = str(raised.value)
    assert message.startswith("no Redis Cluster node answered: ")
    assert f"127.0.0.1:{ports[-1]}" in message
    assert "refused" in message.lower()


def test_reading_the_layout_from_no_node_is_a_connection_error():
    with pytest.raises(redis.ConnectionError, match="no Redis Cluster node answered"):
        read_shards([])


# ClusterCommands


class CountedBuild:
    """A build function that fails `failures` times (RedisCluster's own exception, as
    when no startup node answers), then returns `client`."""

    def __init__(self, failures: int = 1_000_000, client=None, error=None):
        self.calls = 0
        self.failures = failures
        self.client = client
        self.error = error or RedisClusterException("Redis Cluster cannot be connected.")

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.client


def test_an_unreachable_cluster_is_a_connection_error_on_first_use():
    build = CountedBuild()
    commands = ClusterCommands(build)
    assert build.calls == 0  # nothing built until used
    with pytest.raises(redis.ConnectionError, match="Redis Cluster unreachable") as raised:
        commands.get("key")
    assert "cannot be connected" in str(raised.value)
    assert isinstance(raised.value.__cause__, RedisClusterException)
    assert build.calls == 1


def test_a_build_failing_with_a_redis_error_is_a_connection_error_too():
    build = CountedBuild(error=redis.TimeoutError("Timeout connecting to server"))
    with pytest.raises(redis.ConnectionError, match="Timeout connecting to server"):
        ClusterCommands(build).ping()


def test_no_new_attempt_is_made_within_retry_after():
    build = CountedBuild()
    commands = ClusterCommands(build)
    assert commands.RETRY_AFTER >= 1.0
    with pytest.raises(redis.ConnectionError):
        commands.evalsha("0" * 40, 0)
    for _ in range(3):
        with pytest.raises(redis.ConnectionError, match="Redis Cluster unreachable"):
            commands.evalsha("0" * 40, 0)
    assert build.calls == 1


def test_a_new_attempt_is_made_after_retry_after():
    build = CountedBuild()
    commands = ClusterCommands(build)
    commands.RETRY_AFTER = 0.05
    with pytest.raises(redis.ConnectionError):
        commands.get("key")
    time.sleep(0.1)
    with pytest.raises(redis.ConnectionError):
        commands.get("key")
    assert build.calls == 2


def test_the_client_built_once_is_kept():
    # A plain client stands in for RedisCluster: constructing it connects to nothing.
    client = redis.Redis(port=free_port())
    build = CountedBuild(failures=1, client=client)
    commands = ClusterCommands(build)
    commands.RETRY_AFTER = 0.0
    with pytest.raises(redis.ConnectionError):
        commands.ping()
    assert commands.cluster is client
    assert commands.cluster is client
    assert commands.connection_pool is client.connection_pool  # attributes are the client's
    assert build.calls == 2
    client.close()


def test_registering_a_script_builds_no_client():
    build = CountedBuild()
    commands = ClusterCommands(build)
    text = "return redis.call('GET', KEYS[1])"
    script = commands.register_script(text)
    assert build.calls == 0
    assert isinstance(script, Script)
    assert script.registered_client is commands
    assert script.sha == hashlib.sha1(text.encode()).hexdigest()


def test_a_script_run_while_the_cluster_is_unreachable_is_a_connection_error():
    build = CountedBuild()
    script = ClusterCommands(build).register_script("return 1")
    with pytest.raises(redis.ConnectionError, match="Redis Cluster unreachable"):
        script(keys=["key"])
    assert build.calls == 1
