"""py-spy on the server's worker during a measured phase, for `longpoll.py --profile DIR`.

Each phase leaves DIR/<phase>.txt, py-spy's raw (collapsed-stack) output, which flamegraph
tools read, and a summary of the worker's busy samples: by component (library or app
module), and the app's functions by inclusive share. py-spy pauses the worker for each
sample (100 a second), so the figures of a profiled run read a little worse than those of a
plain one.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

ATTACH_S = 1.0  # py-spy takes a moment to attach before its first sample
STOP_BOUND_S = 30.0
RATE_HZ = 100


def py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, directory: Path | None):
        self.directory = directory
        self.summaries: dict[str, dict[str, Shares]] = {}
        if directory is not None:
            if py_spy() is None:
                raise RuntimeError("--profile needs py-spy (pip install -r requirements-dev.txt)")
            directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def phase(self, pid: int, name: str):
        """Sample process `pid` while inside; a no-op without a directory."""
        if self.directory is None:
            yield
            return
        output = self.directory / f"{name}.txt"
        args = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ)]
        args += ["--format", "raw", "--output", str(output)]
        recorder = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(ATTACH_S)
            yield
        finally:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            try:
                recorder.wait(STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
        if output.exists():
            self.summaries[name] = summarize(output)

    def notes(self) -> list[str]:
        lines = []
        for name, summary in self.summaries.items():
            lines.append(f"profile, {name}: raw stacks in {self.directory / name}.txt")
            for title, shares in summary.items():
                text = "; ".join(f"{share:.0f}% {what}" for share, what in shares)
                lines.append(f"profile, {name}, {title}: {text}")
        return lines


Shares = list[tuple[float, str]]
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^:]*)(?::\d+)?\)$")


def summarize(raw: Path, limit: int = 10) -> dict[str, Shares]:
    """From py-spy's raw output (a line is `frame;frame;... count`, innermost last):

    - by component: where the samples were, by library (sqlalchemy, gunicorn, redis...),
      by module of the app (app/payments/statements.py), or the standard library module;
    - app functions: the app's functions by inclusive share, its hot paths.
    """
    components: Counter = Counter()
    app_functions: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [FRAME.match(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if frame is not None]
        if frames:
            components[component(frames[-1]["path"])] += n
        for name in {f"{f['function']} ({f['path']})" for f in frames if is_app(f["path"])}:
            app_functions[name] += n
    if not total:
        return {}

    def shares(counter: Counter) -> Shares:
        return [(100 * n / total, what) for what, n in counter.most_common(limit)]

    return {"by component": shares(components), "app functions": shares(app_functions)}


def is_app(path: str) -> bool:
    return path.startswith("app/")


def component(path: str) -> str:
    if is_app(path):
        return path
    return path.split("/")[0].removesuffix(".py")
