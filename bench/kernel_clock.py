"""When an answer's bytes reached the generator's socket, by the kernel's clock.

A generator that notes the time when it gets round to reading an answer measures itself as
well: 10,000 answers of a fan-out arrive within a tenth of a second, and reading them one by
one takes longer than that. With SO_TIMESTAMPNS set on a socket, the kernel stamps each
segment as it is received, and `recvmsg` hands the stamp of the last one read over with the
data: the arrival time, however late the generator reads it.

The stamps are CLOCK_REALTIME; they are turned into `time.monotonic()` (the generator's
other times) with one offset taken when this module is imported. Linux only.
"""

import socket
import struct
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python may not name it
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux
ANCILLARY_SPACE = socket.CMSG_SPACE(TIMESPEC.size)
REALTIME_TO_MONOTONIC = time.monotonic() - time.time()


def stamp_arrivals(sock: socket.socket) -> None:
    """Ask the kernel to stamp what `sock` receives (before it connects: segments received
    before this are not stamped)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def recv_stamped(sock: socket.socket, size: int) -> tuple[bytes, float | None]:
    """Up to `size` bytes and when the last of them arrived (time.monotonic()'s clock), or
    None when the kernel gave no stamp."""
    data, ancillary, _flags, _address = sock.recvmsg(size, ANCILLARY_SPACE)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack(payload[: TIMESPEC.size])
            return data, seconds + nanoseconds / 1e9 + REALTIME_TO_MONOTONIC
    return data, None
