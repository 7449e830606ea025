"""The benchmark (bench/longpoll.py) runs end to end at a small size.

As `make bench` runs it, in a subprocess: its own PostgreSQL database, its own redis-server,
its own gunicorn, and with nginx + nchan installed its own nginx. Every shape runs; the exit
code is 0 (every answer correct) and every row of its table has a number and, where it has a
target, a computed yes/no. Targets themselves are not judged here: at 50 waits on a shared
machine they say nothing.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import servers

BENCH = servers.ROOT / "bench" / "longpoll.py"
SIZE = "50"

# Every row of the table, by the start of its figure.
APP_ROWS = [
    "held waits answered correctly, spread",
    "worker RSS per held wait, spread",
    "spread webhook->answer p50",
    "spread webhook->answer p99",
    "spread webhook response p50 / p99",
    "spread webhooks per second",
    "Redis connections per worker",
    "DB reads of orders per wait answered by pub/sub",
    "DB reads of orders per wait on a cache hit",
    "internal delivery p99",
    "settlement p99",
    "cold worker",
    "CPU s generator / worker, spread",
    "held waits answered correctly, fan-out",
    "worker RSS per held wait, fan-out",
    "fan-out webhook -> last answer",
    "fan-out webhook -> last answer read by us",
    "CPU s generator / worker, fan-out",
    "sustained webhooks per second",
    "CPU s generator / worker, sustained",
]
NCHAN_ROWS = [
    "nchan subscribers answered correctly, spread",
    "nchan RSS per held subscriber, spread",
    "nchan spread publish->answer p50 / p99",
    "nchan subscribers answered correctly, fan-out",
    "nchan RSS per held subscriber, fan-out",
    "nchan fan-out publish -> last answer",
    "nchan fan-out publish -> last answer read by us",
    "ratio RSS per held wait, app/nchan",
    "ratio fan-out last answer, app/nchan",
    "CPU s generator / nginx worker, nchan spread",
    "CPU s generator / nginx worker, nchan fan-out",
]


def nchan_installed() -> bool:
    nginx = shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)
    modules = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")
    return bool(nginx) and any(Path(d, "ngx_nchan_module.so").exists() for d in modules)


def run_bench(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, str]:
    """Run the benchmark as `make bench` does; its result and the end of its output."""
    env = dict(os.environ)
    if "TEST_POSTGRES_URL" in os.environ:
        env["BENCH_POSTGRES_URL"] = os.environ["TEST_POSTGRES_URL"]
    result = subprocess.run(
        args, cwd=servers.ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    return result, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


def table(stdout: str) -> dict[str, tuple[str, str, str]]:
    """figure -> (measured, target, ok?) from the printed table (its header and rule left out)."""
    rows = {}
    for line in stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| figure "):
            continue
        figure, measured, target, ok = (cell.strip() for cell in line.strip("|").split("|"))
        rows[figure] = (measured, target, ok)
    return rows


@pytest.mark.timeout(320)
def test_every_shape_runs_and_every_row_has_a_number():
    with_nchan = nchan_installed()
    args = [sys.executable, str(BENCH), "--orders", SIZE, "--fanout", SIZE, "--sustained", SIZE]
    args += ["--vs-nchan"] if with_nchan else []
    result, output = run_bench(args, timeout=300)
    assert result.returncode == 0, output

    rows = table(result.stdout)
    expected = APP_ROWS + (NCHAN_ROWS if with_nchan else [])
    for start in expected:
        found = [figure for figure in rows if figure.startswith(start)]
        assert found, f"no row {start!r}\n{output}"
        for figure in found:
            measured, target, ok = rows[figure]
            assert re.search(r"\d", measured), f"{figure}: no number in {measured!r}"
            # A row with a target says whether it was met; one without, or a ratio of a
            # figure too small to divide by ("n/a"), says nothing.
            judged = target != "-" and not measured.startswith("n/a")
            assert ok in (("yes", "no") if judged else ("-",)), f"{figure}: {ok!r}"
    assert len(rows) == len(expected), f"rows not expected:\n{output}"
    for figure, (_, _, ok) in rows.items():
        if "answered correctly" in figure:
            assert ok == "yes", f"{figure}\n{output}"


@pytest.mark.timeout(200)
def test_profile_leaves_the_workers_stacks_and_a_summary(tmp_path):
    """--profile DIR: py-spy samples the worker while a shape delivers (bench/pyspy.py)."""
    args = [sys.executable, str(BENCH), "--shapes", "sustained", "--sustained", "300"]
    args += ["--warmup", "0", "--profile", str(tmp_path)]
    result, output = run_bench(args, timeout=180)
    assert result.returncode == 0, output
    stacks = (tmp_path / "sustained.txt").read_text().splitlines()
    # py-spy's raw format, `frame;frame;... count`, with the webhook's own code in it; a
    # sample taken while the worker ran no Python frame has an empty stack: ` count`.
    assert any("app/payments/services.py" in line for line in stacks), output
    assert all(re.fullmatch(r"(.+)? \d+", line) for line in stacks), output
    components = re.search(r"note: profile, sustained, by component: (.+)", result.stdout)
    assert components, output
    assert re.match(r"\d+% \S+", components.group(1)), output
    assert "note: profile, sustained, app functions: " in result.stdout, output


@pytest.mark.timeout(200)
def test_a_series_prints_medians_with_ranges_of_every_run():
    """make bench BENCH_RUNS=N (bench/series.py): every figure of N runs, median [min-max]."""
    args = [sys.executable, str(servers.ROOT / "bench" / "series.py"), "--runs", "2", "--"]
    args += ["--shapes", "sustained", "--sustained", SIZE, "--warmup", "0"]
    result, output = run_bench(args, timeout=180)
    assert result.returncode == 0, output
    assert output.count("series: run ") == 2, output
    rows = table(result.stdout)
    measured, target, ok = rows[
        f"sustained webhooks per second (M={SIZE}, {SIZE} of {SIZE} HTTP 200)"
    ]
    assert re.fullmatch(r"\d+( \[\d+-\d+\])?", measured), output
    assert (target, ok) == (">= 3500", "yes" if int(measured.split()[0]) >= 3500 else "no"), output


@pytest.mark.timeout(200)
def test_memory_judges_the_rss_per_held_wait_against_nchan_at_its_own_size():
    """--shapes memory: the spread at --memory-orders, for the RSS per held wait; with nchan,
    the RSS target is judged on its ratio, and the spread's ratio is shown unjudged."""
    with_nchan = nchan_installed()
    args = [sys.executable, str(BENCH), "--shapes", "spread,memory", "--orders", "30"]
    args += ["--memory-orders", SIZE, "--warmup", "0"] + (["--vs-nchan"] if with_nchan else [])
    result, output = run_bench(args, timeout=180)
    assert result.returncode == 0, output
    rows = table(result.stdout)
    assert rows[f"held waits answered correctly, memory (N={SIZE})"] == (
        f"{SIZE} of {SIZE}",
        "all",
        "yes",
    ), output
    # At 50 waits on a warmed worker the growth is within the heap's noise: any sign.
    rss = rows[f"worker RSS per held wait, memory (N={SIZE})"][0]
    assert re.fullmatch(r"-?\d+\.\d KiB", rss), output
    if with_nchan:
        answered = rows[f"nchan subscribers answered correctly, memory (N={SIZE})"]
        assert answered[0] == f"{SIZE} of {SIZE}", output
        ratio = rows[f"ratio RSS per held wait, app/nchan, memory (N={SIZE})"]
        assert ratio[1] == "<= 0.2x" and ratio[2] in ("yes", "no"), output
        assert rows["ratio RSS per held wait, app/nchan, spread"][1:] == ("-", "-"), output


@pytest.mark.timeout(200)
def test_scaling_compares_one_worker_with_n_and_shows_every_process_cpu():
    args = [sys.executable, str(BENCH), "--shapes", "scaling", "--sustained", SIZE]
    args += ["--warmup", "0", "--workers", "2"]
    result, output = run_bench(args, timeout=180)
    assert result.returncode == 0, output
    rows = table(result.stdout)
    for n in (1, 2):
        assert re.fullmatch(
            r"\d+", rows[f"webhooks per second, {n} worker(s) ({SIZE} of {SIZE} HTTP 200)"][0]
        )
        cpu = rows[f"CPU s workers / postgres / redis / generator, {n} worker(s)"][0]
        assert re.fullmatch(r"(\d+\.\d\d / ){3}\d+\.\d\d in \d+\.\d\d s", cpu), output
    measured, target, ok = rows["webhook rate, 2 workers / 1"]
    assert target == ">= 1.4x" and ok in ("yes", "no"), output


@pytest.mark.timeout(200)
def test_host_holds_waits_from_several_generator_processes_over_several_workers():
    args = [sys.executable, str(BENCH), "--shapes", "host", "--host-waits", "300"]
    args += ["--host-per-process", "100", "--host-workers", "2", "--warmup", "0"]
    result, output = run_bench(args, timeout=180)
    assert result.returncode == 0, output
    rows = table(result.stdout)
    answered = rows["host: held waits answered correctly (2 workers, 3 generator processes)"]
    assert answered[0] == "300 of 300", output
    assert re.fullmatch(r"\d+\.\d\d s", rows["host: first webhook -> last answer"][0]), output
    for figure in ("host: CPU s each worker, hold", "host: CPU s each worker, deliver"):
        assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", rows[figure][0]), output


LAYOUT_COLUMNS = ["one Redis, 1 worker", "one Redis, 2 workers", "cluster, 1 worker"]
LAYOUT_COLUMNS += ["cluster, 2 workers"]


@pytest.mark.timeout(260)
def test_cluster_mode_runs_every_layout_and_answers_every_wait():
    """--cluster (bench/layouts.py): one Redis and a real 3-shard cluster, 1 and 2 workers,
    every figure measured in each, every wait answered."""
    args = [sys.executable, str(BENCH), "--cluster", "--orders", "30", "--fanout", "30"]
    args += ["--sustained", "30", "--warmup", "10"]
    result, output = run_bench(args, timeout=240)
    assert result.returncode == 0, output
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["figure", *LAYOUT_COLUMNS], output
    rows = {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])
    }
    assert rows["spread: waits answered correctly"] == ["30 of 30"] * 4, output
    for figure, cells in rows.items():
        for cell in cells:
            assert re.search(r"\d", cell), f"{figure}: no number in {cell!r}"
    # shards + 1 hub connections per worker on the cluster, one on a single Redis.
    hubs = [cell.split(" + ")[0] for cell in rows["Redis connections per worker: hub + commands"]]
    assert hubs == ["1", "1", "4", "4"], output
