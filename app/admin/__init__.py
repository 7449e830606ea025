"""Admin: statistics (cached, triggered, streamed), service status, realtime counts.

The admin path depends on the customer path, never the other way round: it learns of order
changes and callbacks through the orders feature's signals.
"""

import time

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/api")


def init_app(app) -> None:
    from app.lifecycle import Lifecycle
    from app.orders.signals import callback_received, order_changed
    from app.realtime.publish import Increment, Latest, Publish

    from . import background, routes  # noqa: F401  (routes attach to bp)
    from .broadcast import StatsFeed
    from .stats import CHANGED_KEY, TRIGGER_CHANNEL, WEBHOOKS_KEY, StatsSource
    from .trigger import StatsTrigger

    app.register_blueprint(bp)
    cfg, ext = app.config, app.extensions
    source = ext["admin.stats"] = StatsSource(app, ext["redis"], ext["presence"])
    ext["admin.feed"] = StatsFeed(
        ext["hub"],
        source,
        safety_interval=cfg["STATS_SAFETY_POLL_INTERVAL"],
        db_interval=cfg["STATS_DB_POLL_INTERVAL"],
    )
    publisher = ext["publisher"]

    def announce() -> None:
        # Non-blocking: queued for the publisher, the request does not wait for Redis. The
        # time is kept as well, so any later read recomputes statistics cached before it.
        at = repr(time.time())
        publisher.submit(Latest(CHANGED_KEY, max(1, int(cfg["STATS_CACHE_TTL"])), at))
        publisher.submit(Publish(TRIGGER_CHANNEL, at))

    trigger = ext["admin.trigger"] = StatsTrigger(
        announce,
        sample_rate=cfg["STATS_SAMPLE_RATE"],
        min_interval=cfg["STATS_MIN_PUBLISH_INTERVAL"],
        trailing_delay=cfg["STATS_TRAILING_DELAY"],
    )

    def on_order_changed(_sender, **_):
        trigger.changed()

    counters = {"received": "received", "duplicate": "duplicated", "rejected": "rejected"}

    def on_callback(_sender, outcome: str):
        # Queued on the publisher in order: "received" goes out before the trigger.
        publisher.submit(Increment(WEBHOOKS_KEY, counters[outcome]))

    # weak=False: the receivers are closures that nothing else holds.
    order_changed.connect(on_order_changed, sender=app, weak=False)
    callback_received.connect(on_callback, sender=app, weak=False)

    jobs = ext["admin.services"] = background.build_services(app, source)
    lifecycle = Lifecycle.of(app)
    for job in jobs:
        lifecycle.on_start(job.start)
    # Give the leases back at once: another worker takes the jobs over without waiting.
    for job in jobs:
        lifecycle.on_drain(job.stop)
