"""Prometheus metrics of the service, and the `/metrics` endpoint.

Under gunicorn every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (set up by
gunicorn.conf.py), and a scrape of any worker sums them all. Without that directory (tests,
`flask run`) the values live in this process. Gauges count only live workers.

This module imports nothing of the app, so every layer, the realtime core included, can
record what it does.
"""

import os

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

_PREFIX = "orderwait_"
# Delivery is expected in milliseconds; the tail shows polling (seconds) when Redis is away.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip

waits_held = Gauge(_PREFIX + "waits_held", "Long-poll waits open now", multiprocess_mode="livesum")
streams_open = Gauge(
    _PREFIX + "streams_open", "Event streams open now", ["kind"], multiprocess_mode="livesum"
)
waits_answered = Counter(
    _PREFIX + "waits_answered", "Long-poll waits answered, by what answered them", ["source"]
)
waits_queued = Counter(
    _PREFIX + "waits_queued", "Long-poll waits that found no turn to open and queued for one"
)
webhooks = Counter(_PREFIX + "webhooks", "Provider callbacks, by outcome", ["outcome"])
publish_failures = Counter(
    _PREFIX + "publish_failures", "Redis publish batches that failed (their waiters are polled)"
)
hub_connected = Gauge(
    _PREFIX + "hub_connected",
    "Workers whose pub/sub connection is up",
    multiprocess_mode="livesum",
)
hub_reconnects = Counter(_PREFIX + "hub_reconnects", "Pub/sub connections re-established")
redis_primary_changes = Counter(
    _PREFIX + "redis_primary_changes", "Times the hub found Redis's primary moved (failovers)"
)
fallback_mode_seconds = Counter(
    _PREFIX + "fallback_mode_seconds", "Seconds workers spent on database polling, Redis away"
)
fallback_queries = Counter(
    _PREFIX + "fallback_queries",
    "Database queries made because Redis was away or a publish failed",
    ["kind"],
)
delivery_seconds = Histogram(
    _PREFIX + "delivery_seconds",
    "Order change committed to the waiting client's answer written, for pushed answers",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
dispatch_seconds = Histogram(
    _PREFIX + "dispatch_seconds",
    "Message received by the worker's hub to the waiting client's answer written",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
stats_computations = Counter(
    _PREFIX + "stats_computations", "Admin statistics computed from the database"
)

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
