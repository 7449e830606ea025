"""Deployment files: the compose stack (PostgreSQL, Redis, a migration, two app replicas behind
nginx) and the gunicorn settings."""

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from app.config.sections import Waits
from app.config.topology import cluster_problem
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


NODES = tuple(f"redis-node{n}" for n in range(1, 7))
CLUSTER = (*NODES, "redis-cluster-create")


def interpolated(script: str) -> str:
    """A command as the container's shell gets it: compose turns `$$` into `$`."""
    return script.replace("$$", "$")


def test_compose_has_a_cluster_profile_of_six_nodes_that_announce_their_names():
    services = compose()["services"]
    in_profile = {name for name, svc in services.items() if "cluster" in svc.get("profiles", ())}
    assert in_profile == set(CLUSTER)
    for name in NODES:
        node = services[name]
        assert node["profiles"] == ["cluster"], name
        assert node["image"].startswith("redis:7"), name
        args = " ".join(node["command"])
        assert "redis-server --cluster-enabled yes" in args, name
        # The name it announces is its hostname, which is its service name: what MOVED
        # redirects and CLUSTER SLOTS hand the apps, resolvable on the compose network.
        assert '--cluster-announce-hostname "$$(hostname)"' in args, name
        assert node["hostname"] == name
        assert "--cluster-preferred-endpoint-type hostname" in args, name
        assert "--save '' --appendonly no" in args, name
        assert node["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"], name
        assert "depends_on" not in node and "ports" not in node, name


def test_compose_creates_the_cluster_of_all_six_nodes_with_a_replica_each():
    services = compose()["services"]
    create = services["redis-cluster-create"]
    assert create["profiles"] == ["cluster"]
    assert create["restart"] == "no"
    assert create["depends_on"] == {name: {"condition": "service_healthy"} for name in NODES}
    script = create["command"][-1]
    listed = re.search(r'^nodes="([^"]*)"', script, re.M).group(1).split()
    assert listed == [f"{name}:6379" for name in NODES]
    assert "redis-cli --cluster create $$nodes --cluster-replicas 1 --cluster-yes" in script


def fake_redis_cli(tmp_path, known: dict[str, int | None]):
    """A redis-cli on PATH: CLUSTER INFO on a node reports the number of nodes it knows,
    `known[node]` (1 if not given; None: it does not answer); other calls are logged."""
    log = tmp_path / "calls"
    cases = "".join(
        f"{node}) echo 'Could not connect to Redis' >&2; exit 1 ;;\n"
        if count is None
        else f"{node}) n={count} ;;\n"
        for node, count in known.items()
    )
    cli = tmp_path / "bin" / "redis-cli"
    cli.parent.mkdir()
    cli.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *"cluster info") ;; *) echo "$*" >> {log}; exit 0 ;; esac\n'
        f'n=1; case "$2" in\n{cases}esac\n'
        "printf 'cluster_state:fail\\r\\ncluster_known_nodes:%s\\r\\n' $n\n"
    )
    cli.chmod(0o755)
    return cli.parent, log


def run_create(tmp_path, known: dict[str, int | None]) -> tuple[subprocess.CompletedProcess, str]:
    """The create service's script on fake nodes: its result and the other redis-cli calls."""
    bin_dir, log = fake_redis_cli(tmp_path, known)
    script = interpolated(compose()["services"]["redis-cluster-create"]["command"][-1])
    result = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result, log.read_text() if log.exists() else ""


def test_compose_cluster_create_joins_fresh_nodes(tmp_path):
    result, calls = run_create(tmp_path, {})
    assert result.returncode == 0, result.stderr
    six = " ".join(f"{name}:6379" for name in NODES)
    assert calls == f"--cluster create {six} --cluster-replicas 1 --cluster-yes\n"


@pytest.mark.parametrize("node", [NODES[0], NODES[-1]])
def test_compose_cluster_create_leaves_a_created_cluster_alone(tmp_path, node):
    # A restart: the nodes kept their nodes.conf and know each other (any one of them is
    # enough to tell; `--cluster create` would refuse a node that is not empty).
    result, calls = run_create(tmp_path, {node: 6})
    assert result.returncode == 0, result.stderr
    assert calls == ""
    assert f"{node}:6379 already knows 6 nodes" in result.stdout


def test_compose_cluster_create_fails_when_a_node_does_not_answer(tmp_path):
    result, calls = run_create(tmp_path, {NODES[2]: None})
    assert result.returncode != 0
    assert calls == ""
    assert f"{NODES[2]}:6379 answers no CLUSTER INFO" in result.stderr


def test_compose_apps_pass_the_cluster_nodes_through_and_document_them():
    services = compose()["services"]
    # Off unless asked for, as the Sentinel settings are.
    for name in (*APPS, "migrate"):
        env = services[name]["environment"]
        assert env["REDIS_CLUSTER_NODES"] == "${REDIS_CLUSTER_NODES:-}"
    # The documented command line: seed nodes of the profile, accepted with the REDIS_URL here.
    header = (ROOT / "docker-compose.yml").read_text().split("\nx-app:")[0]
    seeds = re.search(
        r"REDIS_CLUSTER_NODES=(\S+) \\\n#\s+docker compose --profile cluster up", header
    )
    assert seeds, header
    addresses = tuple(seeds.group(1).split(","))
    assert addresses and all(address.split(":")[0] in NODES for address in addresses)
    assert all(address.endswith(":6379") for address in addresses)
    for name in APPS:
        assert cluster_problem(addresses, (), services[name]["environment"]["REDIS_URL"]) is None


def test_compose_default_stack_has_none_of_the_cluster():
    services = compose()["services"]
    default = {name for name, svc in services.items() if not svc.get("profiles")}
    assert default == {"postgres", "redis", "migrate", *APPS, "nginx"}
    # Nothing there waits on a cluster service (which would pull it in, or fail the stack).
    for name in default:
        assert not set(services[name].get("depends_on", {})) & set(CLUSTER), name


def test_compose_cluster_profile_is_valid_for_docker_compose():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--profile", "cluster", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
