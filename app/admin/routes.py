"""Admin HTTP routes: statistics, their streams, service status, realtime counts."""

from flask import current_app, jsonify, request

from app.realtime import current_hub, registry, sse
from app.realtime.connections import WORKER_ID

from . import bp, streams
from .auth import require_admin

CONNECTIONS_LISTED = 200


def _last_id() -> int:
    return max(sse.last_event_id(request) or 0, 0)


@bp.get("/admin/stats")
def stats():
    require_admin(request)
    return jsonify(current_app.extensions["admin.feed"].current())


@bp.post("/admin/stats/refresh")
def refresh():
    require_admin(request)
    return jsonify({**current_app.extensions["admin.stats"].refresh(), "mode": "pubsub"})


@bp.get("/admin/stats/stream")
def stats_stream():
    return _admin_stream("sse:stats", "admin:stats", streams.stats_frames)


@bp.get("/services/status/stream")
def services_stream():
    return _admin_stream("sse:services", "service:*", streams.status_frames)


def _admin_stream(kind: str, key: str, frames_for):
    """An admin SSE stream: token checked, one of its stream slots taken, given back at end."""
    token = require_admin(request)
    last_id = _last_id()
    lease, release = streams.open_stream(token)
    try:
        frames = frames_for(token, lease, last_id)
    except BaseException:
        release()  # refused (the database is down, say): the slot is free again at once
        raise
    return sse.serve(kind, key, frames, release=release)


@bp.get("/realtime/stats")
def realtime_stats():
    require_admin(request)
    hub = current_hub().stats()
    return jsonify(
        {
            "worker": WORKER_ID,
            "activeConnections": len(registry),
            "byKind": registry.counts(),
            "redis": hub,
            "connections": registry.listing(CONNECTIONS_LISTED),
            "totals": current_app.extensions["presence"].totals(),
        }
    )
