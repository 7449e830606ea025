"""README.md's walkthrough, run as written with bash against a live gunicorn.

The block is the fenced ```bash block right after the `<!-- walkthrough` comment in
README.md. It is run literally: the one substitution is the base URL, `localhost:8000` (where
`make run` listens) replaced by the live server's `127.0.0.1:<port>`. The server gets what
`make run` sets (WEBHOOK_SECRET=dev-webhook-secret, its limits switched off, two workers) and
the default longest wait, so the walkthrough's 60 s wait is held for real: it must be answered
by the callback within milliseconds, not by its timeout, and the script must finish well
inside its own time bound.
"""

import json
import os
import re
import signal
import subprocess
import time

from tests.support import servers

README = servers.ROOT / "README.md"
MARKER = "<!-- walkthrough"
BASE = "localhost:8000"
# What `make run` exports (Makefile), and the longest wait the tests' FAST settings shorten.
MAKE_RUN_ENV = {
    "WEBHOOK_SECRET": "dev-webhook-secret",
    "DEV_SIMULATE_PROVIDER": "1",
    "ADMIN_TOKENS": "dev-admin-token",
    "ORDER_CREATE_RATE_LIMIT": "",
    "WAITS_PER_CLIENT": "0",
    "LONGPOLL_MAX_TIMEOUT_MS": "120000",
}
# The walkthrough's wait holds up to 60 s; answered by the callback, the script takes about
# the one second it sleeps. A script still running after this has failed.
RUN_TIMEOUT = 30
FINISHED_WITHIN = 10


def walkthrough() -> str:
    """The fenced bash block that follows the walkthrough marker in README.md."""
    text = README.read_text()
    assert text.count(MARKER) == 1, f"README.md must have exactly one {MARKER!r} comment"
    after = text[text.index(MARKER) :]
    block = re.match(r"<!--.*?-->\n```bash\n(.*?)^```$", after, re.DOTALL | re.MULTILINE)
    assert block, f"no ```bash block right after {MARKER!r} in README.md"
    return block.group(1)


def callback_command(script: str) -> str:
    """The command that posts to the webhook, its continuation lines joined."""
    commands = script.replace("\\\n", " ").splitlines()
    posts = [c for c in commands if "/api/payhero/callback" in c and c.lstrip().startswith("curl")]
    assert len(posts) == 1, posts
    return posts[0]


def run_bash(script: str) -> tuple[int, str, str]:
    """Run the script with bash in a process group of its own, within RUN_TIMEOUT; a script
    still running then fails the test, and the group (the held curl included) is killed."""
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=servers.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"the walkthrough did not finish within {RUN_TIMEOUT} s (its wait was not answered "
            f"by the callback)\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ) from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the script left running
        except ProcessLookupError:
            pass
    return proc.returncode, stdout, stderr


def parsed(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def test_walkthrough_sends_the_callback_as_the_provider_does():
    """A raw JSON body with its content type, never a form (curl -d would send one)."""
    command = callback_command(walkthrough())
    assert "Content-Type: application/json" in command
    assert "--data-binary" in command
    assert not re.search(r"\s(-d|--data|--data-urlencode|-F|--form)\s", command)


def test_walkthrough_runs_as_written(live_server):
    """bash runs the block unchanged but for its base URL (localhost:8000 -> the live
    server's host:port): it exits 0 within seconds, having printed the held wait's answer,
    pushed by the callback: changed, paymentStatus completed, source redis."""
    script = walkthrough()
    assert BASE in script
    server = live_server(workers=2, **MAKE_RUN_ENV)
    host = server.url.removeprefix("http://")
    script = script.replace(BASE, host)
    assert ":8000" not in script  # nothing left to reach a `make run` of this machine

    started = time.monotonic()
    returncode, stdout, stderr = run_bash(script)
    elapsed = time.monotonic() - started

    report = f"exit {returncode} after {elapsed:.1f} s\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert returncode == 0, report
    assert stderr == "", report
    # Two answers, in either order: the wait's (an order, with its source) and the callback's.
    answers = [parsed(line) for line in stdout.splitlines() if line.strip()]
    assert len(answers) == 2 and all(isinstance(a, dict) for a in answers), report
    waits = [a for a in answers if "source" in a]
    callbacks = [a for a in answers if "duplicate" in a]
    assert len(waits) == 1 and len(callbacks) == 1, report
    (answer,), (callback,) = waits, callbacks
    assert answer["changed"] is True, report
    assert answer["paymentStatus"] == "completed", report
    assert answer["source"] == "redis", report  # pushed by the callback, not a timeout
    assert callback["changed"] is True and callback["duplicate"] is False, report
    assert callback["orderId"] == answer["orderId"], report
    assert elapsed < FINISHED_WITHIN, report
