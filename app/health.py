"""Liveness and readiness probes."""

import time
from collections.abc import Callable
from typing import Literal

import gevent
from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.extensions import db, redis_store
from app.logs import first_line
from app.realtime import current_hub
from app.responses import DEFAULT_RETRY_AFTER

bp = Blueprint("health", __name__)


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    status: Literal["ok", "down"]
    latencyMs: float
    error: str | None = None


class Checks(BaseModel):
    database: Literal["ok", "down"]
    redis: Literal["ok", "down"]
    pubsub: Literal["connected", "database-polling"]


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    checks: Checks
    detail: dict[str, Check] = Field(description="Each check's latency, and its error if any.")
    hub: dict = {}


@bp.get("/healthz")
def healthz():
    """The process serves requests; says nothing of its dependencies."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Database down is not ready (503); Redis down, or pub/sub not delivering (the hub is on
    database polling), is degraded but serving (200). Each check has READYZ_TIMEOUT seconds;
    `detail` has each check's latency or error, `hub` this worker's hub counts."""
    timeout = current_app.config["READYZ_TIMEOUT"]
    database = _probe(_ping_database, timeout)
    redis = _probe(lambda: redis_store.client().ping(), timeout)
    hub = current_hub().stats()
    checks = {
        "database": database["status"],
        "redis": redis["status"],
        "pubsub": "connected" if hub["connected"] else "database-polling",
    }
    body = {"checks": checks, "detail": {"database": database, "redis": redis}, "hub": hub}
    if checks["database"] != "ok":
        return jsonify(status="unavailable", **body), 503, {"Retry-After": DEFAULT_RETRY_AFTER}
    healthy = checks["redis"] == "ok" and checks["pubsub"] == "connected"
    return jsonify(status="ok" if healthy else "degraded", **body)


def _ping_database() -> None:
    """A pooled connection the server dropped fails once and is thrown away with the pool:
    the check is tried again on a new connection, so it tells the database's state now
    (refused, say), not the fate of a connection opened before."""
    try:
        _select_one()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        _select_one()


def _select_one() -> None:
    try:
        db.session.execute(text("SELECT 1"))
    except gevent.Timeout:
        db.session().invalidate()  # a query cut off half-way leaves its connection unusable
        raise
    finally:
        db.session.close()


def _probe(check: Callable[[], object], timeout: float) -> dict:
    """Run `check` for at most `timeout` seconds: {"status": "ok"|"down", "latencyMs"} plus
    the error when it failed."""
    started = time.monotonic()
    try:
        with gevent.Timeout(timeout):
            check()
    except gevent.Timeout:
        return _result("down", started, f"no answer within {timeout:g}s")
    except (SQLAlchemyError, RedisError, OSError) as exc:
        return _result("down", started, first_line(exc))
    return _result("ok", started)


def _result(status: str, started: float, error: str | None = None) -> dict:
    result = {"status": status, "latencyMs": round((time.monotonic() - started) * 1000, 1)}
    if error is not None:
        result["error"] = error
    return result
