"""WSGI entry point: make every blocking call cooperative FIRST, then build the app."""

import gevent
from gevent import monkey

# gevent records where every greenlet was spawned from: frames a held request would keep alive.
gevent.config.track_greenlet_tree = False
monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

# psycopg2 waits on sockets in C; this makes it yield to the gevent loop, so a slow query
# never stalls the other greenlets of the worker.
patch_psycopg()

from app import create_app  # noqa: E402

app = create_app()
