"""What a worker starts, stops and waits for, apart from the requests its server serves.

Features register here while the app is built; the server (app/server.py) starts them once
the worker serves, drains them when it is told to stop, and waits for what they hold before
the process ends. Importing this module loads no part of the application.
"""

from __future__ import annotations

import time
from collections.abc import Callable

KEY = "orderwait.lifecycle"


class Lifecycle:
    def __init__(self):
        self._starts: list[Callable[[], None]] = []
        self._drains: list[Callable[[], None]] = []
        self._holders: list[Callable[[float], bool]] = []

    @staticmethod
    def of(app) -> Lifecycle:
        return app.extensions[KEY]

    def on_start(self, start: Callable[[], None]) -> None:
        """Run `start` in each worker once it serves (the hub, background jobs)."""
        self._starts.append(start)

    def on_drain(self, drain: Callable[[], None]) -> None:
        """Run `drain` when the worker is told to stop: answer what is held, end streams."""
        self._drains.append(drain)

    def on_exit_wait_for(self, wait_empty: Callable[[float], bool]) -> None:
        """Before the process ends, `wait_empty(timeout)` blocks until what it holds outside
        the server's own requests was answered."""
        self._holders.append(wait_empty)

    def start(self) -> None:
        for start in self._starts:
            start()

    def drain(self) -> None:
        for drain in self._drains:
            drain()

    def wait_drained(self, deadline: float) -> None:
        """Wait for every holder, all of them by `deadline` (time.monotonic())."""
        for wait_empty in self._holders:
            wait_empty(max(deadline - time.monotonic(), 0))
