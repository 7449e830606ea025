"""The subscriber hub: ONE Redis pub/sub connection per worker process, read by one greenlet.

Waiters register per channel (or pattern); the hub subscribes on the first and unsubscribes
after the last. When Redis is unreachable the hub polls the database instead, and on recovery
re-subscribes everything and polls once more.

The hub knows no feature: channels, payloads and poll sources are plain strings and callables.
Its parts: registry (who listens where), connection (the pub/sub connection and its reader),
canary (is the subscription still answering?), poller (the database while Redis is away),
facade (Hub, composing them).
"""

from .facade import Hub
from .poller import PollSource
from .registry import SHUTDOWN, Delivery, Handler, Watch

__all__ = ["SHUTDOWN", "Delivery", "Handler", "Hub", "PollSource", "Watch"]
