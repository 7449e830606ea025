"""An order's channel and keys share one Redis Cluster slot (their id is a hash tag), so a
webhook's publish, cache write and buffer append go to one node in one round trip."""

import uuid

from redis.crc import key_slot

from app.orders import events


def test_an_orders_channel_and_keys_share_one_cluster_slot():
    slots = set()
    for _ in range(200):
        order_id = str(uuid.uuid4())
        names = (events.channel(order_id), events.latest_key(order_id), events.buffer_key(order_id))
        assert {key_slot(name.encode()) for name in names} == {key_slot(order_id.encode())}
        slots.add(key_slot(order_id.encode()))
    assert len(slots) > 150  # orders themselves spread over the cluster's slots
