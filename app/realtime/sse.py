"""Server-Sent Events: framing, the streaming response, and the loop every stream shares.

A stream is a generator of already framed strings. `serve` wraps it so that it is counted in
this worker's connection registry until the client goes, and releases whatever the caller
holds for it (a per-token stream slot): gunicorn closes the response when a write to a
departed client fails, which heartbeats make happen within one interval.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from flask import Response, stream_with_context

from app.validation import event_id

from .connections import Connection, registry


def event(data, *, name: str | None = None, event_id: int | str | None = None) -> str:
    """One SSE event: `event:`, `id:` and `data:` lines (data JSON-encoded unless a str)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = []
    if name:
        lines.append(f"event: {name}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    """A comment line: ignored by EventSource, it keeps proxies and the socket alive."""
    return f": {text}\n\n"


HEARTBEAT = comment("heartbeat")


def last_event_id(request) -> int | None:
    """The `Last-Event-ID` header an EventSource sends on reconnect, else `?lastEventId=`;
    either, when malformed, is a 400 (even when the other one would do)."""
    header = event_id(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    query = event_id(request.args.get("lastEventId"), "lastEventId")
    return header if header is not None else query


def serve(
    kind: str, key: str, frames: Callable[[Connection], Iterator[str]], *, release=None
) -> Response:
    """Stream `frames(connection)` as text/event-stream, registered as a connection."""
    connection = registry.open(kind, key)
    released = False

    def close() -> None:
        nonlocal released
        if not released:
            released = True
            registry.close(connection)
            if release is not None:
                release()

    def body() -> Iterator[str]:
        try:
            yield from frames(connection)
        finally:
            close()

    response = Response(stream_with_context(body()), mimetype="text/event-stream")
    # WSGI closes every response, even one whose generator never started.
    response.call_on_close(close)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response
