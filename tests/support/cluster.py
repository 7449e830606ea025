"""A Redis Cluster of a test's own: three primaries and three replicas, each a redis-server
on a free loopback port with its files in a temp dir, joined by `redis-cli --cluster create`
and torn down after."""

import subprocess

import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.support.servers import RedisServer, free_port, wait_until

# Short, so a test sees a failover in seconds: a primary silent for 1 s is failed and its
# replica promoted.
NODE_TIMEOUT_MS = 1000


class ClusterNodeServer(RedisServer):
    """One node: cluster-enabled, its cluster bus on a free port of its own (not port+10000,
    which another test's server may hold)."""

    def __init__(self):
        self.bus_port = free_port()
        super().__init__(
            options=(
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_port),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # Its nodes.conf in its own dir (redis-server resolves it against --dir).
                "--cluster-config-file",
                "nodes.conf",
                # A replica may take over however long it was cut off: the tests kill nodes.
                "--cluster-replica-validity-factor",
                "0",
            )
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


class ClusterSetup:
    """Three primaries with a replica each, every slot covered."""

    def __init__(self, shards: int = 3):
        self.nodes = [ClusterNodeServer() for _ in range(shards * 2)]
        try:
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait_until(self._ready, 30, interval=0.1, message="the cluster ready")
        except BaseException:
            self.stop()
            raise

    @property
    def addresses(self) -> str:
        """REDIS_CLUSTER_NODES for the app: every node, as a deployment would list them."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in self.alive()],
            decode_responses=True,
            socket_timeout=2,
        )

    def alive(self) -> list[ClusterNodeServer]:
        return [node for node in self.nodes if node.proc.poll() is None]

    def node(self, port: int) -> ClusterNodeServer:
        return next(node for node in self.nodes if node.port == port)

    def shards(self) -> list[dict]:
        """CLUSTER SHARDS as a living node sees it."""
        for node in self.alive():
            try:
                return node.client().execute_command("CLUSTER SHARDS")
            except redis.RedisError:
                continue
        raise AssertionError("no cluster node answers")

    def primaries(self) -> dict[int, tuple[int, int]]:
        """The port of each online primary, with the slot ranges it serves."""
        owners = {}
        for shard in _shards(self.shards()):
            for node in shard["nodes"]:
                if node["role"] == "master" and node["health"] == "online":
                    owners[node["port"]] = shard["slots"]
        return owners

    def primary_of(self, key: str) -> int:
        """The port of the primary serving `key`'s slot now."""
        slot = self.client().keyslot(key)
        for port, ranges in self.primaries().items():
            if any(start <= slot <= end for start, end in ranges):
                return port
        raise AssertionError(f"no primary serves slot {slot}")

    def replica_of(self, primary_port: int) -> int:
        for shard in _shards(self.shards()):
            ports = {node["port"]: node for node in shard["nodes"]}
            if primary_port in ports:
                return next(port for port, node in ports.items() if node["role"] == "replica")
        raise AssertionError(f"{primary_port} is in no shard")

    def _ready(self) -> bool:
        try:
            for node in self.nodes:
                client = node.client()
                if client.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                    return False
                info = client.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        except redis.RedisError:
            return False
        return len(self.primaries()) == len(self.nodes) // 2

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _shards(raw) -> list[dict]:
    """CLUSTER SHARDS decoded into {"slots": [(start, end)], "nodes": [{...}]}."""
    shards = []
    for shard in raw:
        shard = _pairs(shard)
        slots = shard["slots"]
        shards.append(
            {
                "slots": [(int(slots[i]), int(slots[i + 1])) for i in range(0, len(slots), 2)],
                "nodes": [_pairs(node) for node in shard["nodes"]],
            }
        )
    return shards


def _pairs(flat) -> dict:
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
