"""Production database connections (PostgreSQL): kept open in a pool between requests, and
health-checked when lent, so that one the server closed while idle fails no request."""

import psycopg
import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_requests_reuse_pooled_connections_and_a_dead_one_is_replaced():
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's (DATABASE_URL=postgresql://...)")
    seen = set()
    for _request in range(6):
        seen.add(_backend_pid())
        connection.close()  # the end of a request: the connection goes back to the pool
    assert len(seen) < 6  # the pool's open connections lent again, not one per request

    # The server ends them while idle (a restart, an idle timeout, a proxy).
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        for pid in seen:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    replacement = _backend_pid()  # no OperationalError: checked and replaced when lent
    assert replacement not in seen
