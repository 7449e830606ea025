"""Fixtures of the live tests only."""

import pytest

from tests.support import servers


@pytest.fixture
def db_proxy():
    """A TCP proxy in front of the machine's PostgreSQL that a test can stop, restart and mute."""
    proxy = servers.TcpProxy(5432)
    yield proxy
    proxy.stop()
