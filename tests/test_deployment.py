"""Deployment files: the compose stack and the gunicorn settings."""

import shutil
import subprocess
import sys

import pytest
import yaml

from app.config import Config
from tests.servers import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_migration_before_the_app():
    services = compose()["services"]
    assert {"app", "redis", "postgres", "migrate"} <= set(services)
    assert services["migrate"]["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    app_deps = services["app"]["depends_on"]
    assert app_deps["migrate"]["condition"] == "service_completed_successfully"
    assert app_deps["redis"]["condition"] == "service_healthy"
    for name in ("app", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["REDIS_URL"].startswith("redis://redis:")
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]


def test_compose_file_is_valid_for_docker_compose():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_gunicorn_settings_hold_ten_thousand_waits_per_worker():
    code = (
        "import runpy, json;"
        "c = runpy.run_path('gunicorn.conf.py');"
        "print(json.dumps({k: c[k] for k in ('worker_class', 'worker_connections', 'timeout',"
        " 'bind', 'workers')}))"
    )
    env = {"PORT": "9123", "WEB_CONCURRENCY": "3", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    settings = yaml.safe_load(out)
    assert settings["worker_class"] == "gevent"
    assert settings["worker_connections"] >= 10_000
    assert settings["timeout"] * 1000 > Config.LONGPOLL_MAX_TIMEOUT_MS
    assert settings["bind"] == "0.0.0.0:9123"
    assert settings["workers"] == 3
