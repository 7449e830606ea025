"""The settings that say how Redis is laid out (REDIS_SENTINELS with REDIS_SENTINEL_MASTER,
or REDIS_CLUSTER_NODES): how an address is read, and which combinations are refused at
start."""

from urllib.parse import parse_qs, urlsplit


def host_port(address: str) -> tuple[str, int]:
    """("host", port) from "host:port"; ValueError when it is not that."""
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("not host:port")
    return host, int(port)


def _address_problem(name: str, addresses: tuple[str, ...]) -> str | None:
    for address in addresses:
        try:
            host_port(address)
        except ValueError as exc:
            return f"{name}={address!r}: {exc}"
    return None


def sentinel_problem(sentinels: tuple[str, ...], master: str, redis_url: str) -> str | None:
    """What is wrong with these settings together, or None."""
    if bool(sentinels) != bool(master):
        return (
            "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: the sentinels, and the "
            "name they know the primary by"
        )
    if sentinels and redis_url.startswith("rediss://"):
        # The Sentinel connections here are plain TCP: a TLS URL would be downgraded.
        return (
            "REDIS_SENTINELS with a rediss:// REDIS_URL: TLS to Sentinel-managed primaries is "
            "not supported; use redis:// on a private network"
        )
    return _address_problem("REDIS_SENTINELS", sentinels)


def cluster_problem(
    nodes: tuple[str, ...], sentinels: tuple[str, ...], redis_url: str
) -> str | None:
    """What is wrong with the cluster setting and the others, or None."""
    if not nodes:
        return None
    if sentinels:
        return (
            "REDIS_CLUSTER_NODES and REDIS_SENTINELS both set: a Redis Cluster fails over by "
            "itself; set one of them"
        )
    url = urlsplit(redis_url)
    if url.scheme != "redis":
        return (
            f"REDIS_CLUSTER_NODES with a {url.scheme}:// REDIS_URL: the cluster's nodes are "
            "reached over plain TCP; use redis:// on a private network"
        )
    if url.path.strip("/") not in ("", "0") or parse_qs(url.query).get("db", ["0"]) != ["0"]:
        return (
            "REDIS_CLUSTER_NODES with a database number in REDIS_URL: a Redis Cluster has "
            "only database 0"
        )
    return _address_problem("REDIS_CLUSTER_NODES", nodes)
