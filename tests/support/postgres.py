"""PostgreSQL faults the tests cause on their own database only, never the shared server."""

import time
from contextlib import closing

import psycopg2


def terminate_backends(database_url: str, timeout: float = 10) -> int:
    """Terminate every backend of the database at `database_url` but the one asking, as a
    restart or a pooler recycling them would, and wait until they are gone. Returns how many."""
    name = database_url.rpartition("/")[2]
    with closing(psycopg2.connect(database_url)) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            pids = [pid for pid, terminated in cursor.fetchall() if terminated]
            deadline = time.monotonic() + timeout
            while pids:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
                if cursor.fetchone()[0] == 0:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"backends of {name} still there after {timeout}s")
                time.sleep(0.02)
    return len(pids)
