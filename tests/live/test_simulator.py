"""`flask simulate`: a short flash sale against a live server."""

import json
import os
import subprocess

from tests.support import servers
from tests.support.helpers import WEBHOOK_SECRET


def test_a_short_flash_sale_resolves_every_paid_order_in_one_or_two_requests(live_server):
    server = live_server()
    result = subprocess.run(
        [
            str(servers.BIN / "flask"),
            "--app",
            "wsgi",
            "simulate",
            "--orders",
            "20",
            "--concurrency",
            "20",
            "--url",
            server.url,
            "--time-scale",
            "0.01",
            "--seed",
            "3",
            "--json",
        ],
        cwd=servers.ROOT,
        env={**os.environ, "WEBHOOK_SECRET": WEBHOOK_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    assert summary["customers"] == 20
    assert summary["errors"] == 0
    # Every customer whose provider called back saw the outcome; the rest gave up waiting.
    assert summary["resolved"] == summary["paymentsWithCallback"] > 0
    assert summary["gaveUp"] == 20 - summary["resolved"]
    assert sum(summary["byStatus"].values()) == summary["resolved"]
    assert 1 <= summary["requestsPerPayment"] <= 2
    assert summary["intervalPollingRequestsPerPayment"] > summary["requestsPerPayment"]
    assert summary["latencyAfterCallbackMs"]["p99"] < 1000
