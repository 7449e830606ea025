"""A change whose publish was lost on another process (its own link to Redis cut) while this
worker's subscription is fine: nothing on Redis tells this worker, and a stream here would
follow a settled order forever. The hub's safety read while connected
(HUB_SAFETY_POLL_INTERVAL) delivers it."""

import time

import psycopg2

from tests.support.live import create
from tests.support.sse import SseStream


def settle_without_publishing(pg_url: str, order_id: str) -> None:
    """Settle the order in the database only, as a process whose publish failed left it."""
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "UPDATE orders SET payment_status = 'completed', status = 'paid',"
            " version = version + 1, updated_at = now(), paid_at = now() WHERE id = %s",
            (order_id,),
        )
        assert cursor.rowcount == 1
    conn.close()


def test_a_stream_hears_of_a_change_whose_publish_was_lost_elsewhere(live_server, pg_url):
    server = live_server(HUB_SAFETY_POLL_INTERVAL=1, SSE_HEARTBEAT_INTERVAL=1)
    order = create(server)
    stream = SseStream(
        f"{server.url}/api/orders/{order['orderId']}/events",
        headers={"Authorization": f"Bearer {order['accessToken']}"},
    )
    try:
        assert stream.next_event(5).id == "1"
        settled_at = time.monotonic()
        settle_without_publishing(pg_url, order["orderId"])
        event = stream.next_event(5)
        assert (event.id, event.json()["paymentStatus"]) == ("2", "completed")
        assert time.monotonic() - settled_at < 1 + 1.5  # one safety interval, and a read
    finally:
        stream.close()
