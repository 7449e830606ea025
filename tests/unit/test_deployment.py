"""Deployment files: the compose stack (PostgreSQL, Redis, a migration, two app replicas behind
nginx) and the gunicorn settings."""

import shutil
import subprocess
import sys

import pytest
import yaml

from app.config.sections import Waits
from tests.support.servers import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


APPS = ("app1", "app2")


def test_compose_runs_migration_before_the_apps():
    services = compose()["services"]
    assert {*APPS, "nginx", "redis", "postgres", "migrate"} <= set(services)
    assert "app" not in services
    assert services["migrate"]["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in APPS:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
    for name in (*APPS, "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["REDIS_URL"].startswith("redis://redis:")


def test_compose_runs_two_identical_replicas_behind_nginx():
    services = compose()["services"]
    first, second = (services[name] for name in APPS)
    for key in ("build", "image", "environment", "ulimits", "healthcheck", "depends_on"):
        assert first[key] == second[key], key
    assert first["build"] == "." and first["image"] == services["migrate"]["image"]
    # The image's command runs gunicorn.conf.py; only nginx is reachable from outside.
    for app in (first, second):
        assert "command" not in app and "ports" not in app
        assert app["environment"]["PROXY_FIX_X_FOR"] == "1"
        assert "/healthz" in " ".join(app["healthcheck"]["test"])
        # Room for gunicorn's worker_connections (12,000 held waits by default).
        assert app["ulimits"]["nofile"]["soft"] > 12_000
    proxy = services["nginx"]
    assert proxy["image"].startswith("nginx:")
    assert proxy["ports"] == ["${PORT:-8000}:8000"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["depends_on"] == {name: {"condition": "service_healthy"} for name in APPS}
    assert (ROOT / "deploy" / "nginx.conf").is_file()


def test_compose_keeps_data_in_named_volumes_and_checks_health():
    spec = compose()
    services = spec["services"]
    mounts = {
        name: {m.split(":")[0]: m.split(":")[1] for m in services[name]["volumes"]}
        for name in ("postgres", "redis")
    }
    assert mounts["postgres"]["postgres-data"] == "/var/lib/postgresql/data"
    assert mounts["redis"]["redis-data"] == "/data"
    assert {"postgres-data", "redis-data"} <= set(spec["volumes"])
    for name in ("postgres", "redis", *APPS):
        assert services[name]["healthcheck"]["test"], name


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
    assert settings["worker_class"] == "app.server.Worker"  # gevent's, see test_server.py
    assert settings["worker_connections"] >= 10_000
    assert settings["timeout"] * 1000 > Waits.longpoll_max_timeout_ms
    assert settings["bind"] == "0.0.0.0:9123"
    assert settings["workers"] == 3


def test_compose_has_a_sentinel_profile_the_apps_follow_when_told():
    spec = compose()
    services = spec["services"]
    sentinels = ("sentinel1", "sentinel2", "sentinel3")
    for name in (*sentinels, "redis-replica"):
        assert services[name]["profiles"] == ["sentinel"], name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["redis-replica"]["command"][:4] == [
        "redis-server",
        "--replicaof",
        "redis",
        "6379",
    ]
    script = services["sentinel1"]["command"][-1]
    assert "sentinel monitor orderwait redis 6379 2" in script  # a quorum of two of three
    assert "sentinel resolve-hostnames yes" in script
    assert all(services[name]["command"] == services["sentinel1"]["command"] for name in sentinels)
    # Off unless asked for: the apps pass the two settings through, empty by default.
    for name in (*APPS, "migrate"):
        env = services[name]["environment"]
        assert env["REDIS_SENTINELS"] == "${REDIS_SENTINELS:-}"
        assert env["REDIS_SENTINEL_MASTER"] == "${REDIS_SENTINEL_MASTER:-}"
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--profile", "sentinel", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
