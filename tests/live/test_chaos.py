"""The short chaos campaign: a minute of mixed load through nginx on two instances while
every kind of fault is injected twice (fixed seed), then the history checked. `make chaos`
runs the long one."""

import json
import subprocess
import sys

import pytest

from bench.chaos_faults import KINDS
from tests.support import servers
from tests.support.nginx import NGINX

SEED = 1
DURATION_S = 60


@pytest.mark.timeout(DURATION_S + 300)
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")
def test_short_campaign_loses_nothing(tmp_path):
    report_path = tmp_path / "chaos.json"
    command = [sys.executable, "bench/chaos.py", "--seed", str(SEED)]
    command += ["--duration", str(DURATION_S), "--faults", str(2 * len(KINDS))]
    command += ["--grace", "30", "--json", str(report_path)]
    run = subprocess.run(
        command, cwd=servers.ROOT, capture_output=True, text=True, timeout=DURATION_S + 240
    )
    assert report_path.exists(), run.stdout + run.stderr
    report = json.loads(report_path.read_text())
    summary = run.stdout[-6000:]
    assert report["lost"] == [], summary
    assert report["double_settlements"] == [], summary
    assert report["regressions"] == [], summary
    assert report["bad_answers"] == [], summary
    assert not any(report["leaks"].values()), summary
    assert run.returncode == 0, summary
    # It was a campaign: every fault happened, every kind of client was served.
    assert report["faults"] == {kind: 2 for kind in KINDS}, summary
    for kind in ("create", "wait", "sse", "ws", "webhook", "admin"):
        assert report["requests"].get(kind, 0) > 0, (kind, summary)
    assert report["settled"] >= 100, summary
