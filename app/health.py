"""Liveness and readiness probes."""

from flask import Blueprint, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db, redis_store
from app.realtime import current_hub

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Database down is not ready (503); Redis down, or pub/sub not delivering (the hub is on
    database polling), is degraded but serving (200). `hub` has this worker's hub counts."""
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError:
        checks["database"] = "down"
    finally:
        db.session.close()
    try:
        redis_store.client().ping()
        checks["redis"] = "ok"
    except RedisError:
        checks["redis"] = "down"
    hub = current_hub().stats()
    checks["pubsub"] = "connected" if hub["connected"] else "database-polling"
    if checks["database"] != "ok":
        return jsonify(status="unavailable", checks=checks, hub=hub), 503
    healthy = checks["redis"] == "ok" and checks["pubsub"] == "connected"
    return jsonify(status="ok" if healthy else "degraded", checks=checks, hub=hub)
