"""The benchmarks' arrival stamps (bench/kernel_clock.py): taken by the kernel when the bytes
arrive, not when they are read, on time.monotonic()'s clock."""

import socket
import time

from bench.kernel_clock import recv_stamped, stamp_arrivals


def test_the_stamp_is_the_arrival_not_the_read():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.socket()
        stamp_arrivals(client)
        # While no socket of the system asks for stamps, the kernel stamps nothing, and it
        # turns stamping on in deferred work: a segment arriving before that has none.
        time.sleep(0.1)
        client.connect(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            before = time.monotonic()
            peer.sendall(b"answer")
            time.sleep(0.3)  # read late, as a busy generator would
            data, arrived_at = recv_stamped(client, 100)
            read_at = time.monotonic()
    assert data == b"answer"
    assert arrived_at is not None
    assert before - 0.005 <= arrived_at <= before + 0.1
    assert read_at - arrived_at >= 0.25


def test_a_socket_not_asked_gets_no_stamp():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            peer, _ = server.accept()
            with peer:
                peer.sendall(b"x")
                assert recv_stamped(client, 10) == (b"x", None)
