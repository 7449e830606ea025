"""A held wait keeps its order's state as an interned string (app/orders/wait.py), so the
waits of one order share one copy. That leaks nothing only where an interned string dies
with its last reference: CPython 3.11, and 3.13 on; 3.12 made every interned string
immortal. This fails on a Python where they outlive their waits."""

import sys
import tracemalloc

STATES = 2000


def test_an_interned_string_is_freed_with_its_last_reference():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = [sys.intern(f'{{"orderId":"{i}","pad":"{"x" * 400}"}}') for i in range(STATES)]
        held = tracemalloc.get_traced_memory()[0] - before
        del states
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held > STATES * 400
    # What may stay is the interning table's growth, not the strings.
    assert left < held / 3, (held, left)
