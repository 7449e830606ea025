"""The Sentinel settings (REDIS_SENTINELS, REDIS_SENTINEL_MASTER): how an address is read,
and which combinations are refused at start."""


def host_port(address: str) -> tuple[str, int]:
    """("host", port) from "host:port"; ValueError when it is not that."""
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("not host:port")
    return host, int(port)


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
    for address in sentinels:
        try:
            host_port(address)
        except ValueError as exc:
            return f"REDIS_SENTINELS={address!r}: {exc}"
    return None
