"""gunicorn settings: gevent workers that hold thousands of long polls each."""

import gc
import os
import shutil
import tempfile

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gevent's worker, plus what held requests need from the server: app/server.py.
worker_class = "app.server.Worker"
# Held waits are open connections: leave room for 10,000 of them per worker, plus others.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "12000"))
# gevent workers heartbeat from their own loop, so held requests never trip this; it only
# catches a worker whose loop is stuck. Kept above the longest wait all the same.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "150"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Seconds an idle keep-alive connection stays open. Short, because a stopping worker waits
# for idle connections too; a long poll's next request simply opens a new one.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
control_socket_disable = True
accesslog = os.environ.get("ACCESS_LOG")  # off unless asked: one line per poll adds up


def on_starting(server):
    """Metrics of all workers, summed at scrape time, live in files in one directory: set it
    before any worker imports prometheus_client, and empty it, as values of a previous run
    must not add up with this one's. A directory made here is removed at exit."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="orderwait-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ["ORDERWAIT_METRICS_DIR_OWNED"] = "1"  # survives the re-read of this file on HUP
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


def child_exit(server, worker):
    """A gone worker's gauges (held waits, open streams) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("ORDERWAIT_METRICS_DIR_OWNED"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker):
    """Tune the worker's memory before it serves (app/server.py starts the application's
    hub and background greenlets right after)."""
    # Everything loaded so far (Flask, SQLAlchemy, gevent: a few hundred thousand objects)
    # lives as long as the worker. Freezing it keeps full collections from scanning it
    # again and again: they stalled every held request for about 100 ms under load.
    gc.freeze()
    trim_freed_memory(float(os.environ.get("MALLOC_TRIM_INTERVAL", "2")))


def trim_freed_memory(interval: float) -> None:
    """Give memory freed by finished requests back to the system every `interval` seconds.

    A burst of long polls runs thousands of greenlets at once; once their waits are parked
    (app/realtime/parking.py) the greenlets are gone, but glibc keeps the freed memory in
    its heap, where it counts as the worker's RSS. malloc_trim(0) returns it. 0 disables."""
    import ctypes

    import gevent

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return  # not glibc: nothing to do
    if interval <= 0:
        return

    def loop():
        while True:
            gevent.sleep(interval)
            trim(0)

    gevent.spawn(loop)
