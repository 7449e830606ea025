"""What the order and payment flows announce, for whoever listens (the admin statistics).

Blinker signals keep the dependency one way: the customer path sends them and knows nothing
of the admin path that connects to them.
"""

from blinker import Namespace

_signals = Namespace()

# Sent after every committed order change, with `order` (the order JSON).
order_changed = _signals.signal("order-changed")

# Sent for every provider callback with `outcome="received"` as it arrives, then again with
# "duplicate" or "rejected" when it turns out to be one.
callback_received = _signals.signal("callback-received")
