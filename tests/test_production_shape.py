"""The production shape against real services: PostgreSQL, Redis, a Celery worker.

These run in every suite, whatever database the rest of it uses: they bring up their own
PostgreSQL database and talk to Redis directly, so that ``make test`` with
REQUIRE_SERVICES=1 proves the production shape even when the suite runs on SQLite.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from celery.contrib.testing.worker import start_worker

from portal.celery import app as celery_app
from portal.tasks import ping

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_postgres_database(postgres_url):
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"mirc_shape_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(postgres_url)
    yield urlunparse(parsed._replace(path=f"/{name}"))
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _manage(*args, env):
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


HEALTH_SCRIPT = (
    "import json; from portal.health import service_health; print(json.dumps(service_health()))"
)

APPEND_ONLY_SCRIPT = """
from django.db import connection, DatabaseError
from portal.audit import Actor, record
from portal.models import AuditEventId, AuditAction
event = record(
    actor=Actor.system('test'), event=AuditEventId.APPLICATION_ACTIVITY, action=AuditAction.EXECUTE
)
try:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE portal_auditevent SET actor_name = 'forged' WHERE id = %s", [event.pk]
        )
    print('UPDATED')
except DatabaseError as error:
    print('REFUSED', 'append-only' in str(error))
"""


@pytest.mark.service("postgresql")
@pytest.mark.service("redis")
def test_portal_starts_on_postgresql_and_redis(fresh_postgres_database, redis_url):
    env = {"DATABASE_URL": fresh_postgres_database, "REDIS_URL": redis_url}
    migrate = _manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    health = _manage("shell", "-c", HEALTH_SCRIPT, env=env)
    assert health.returncode == 0, health.stderr
    state = json.loads(health.stdout.strip().splitlines()[-1])
    assert state == {"database": "ok", "channel_layer": "ok", "archive": "ok", "task_queue": "ok"}

    refused = _manage("shell", "-c", APPEND_ONLY_SCRIPT, env=env)
    assert refused.stdout.strip().splitlines()[-1] == "REFUSED True", (
        refused.stdout + refused.stderr
    )


@pytest.mark.service("postgresql")
def test_migrations_match_the_models_on_postgresql(fresh_postgres_database):
    result = _manage(
        "makemigrations", "--check", "--dry-run", env={"DATABASE_URL": fresh_postgres_database}
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.service("redis")
def test_a_celery_worker_runs_tasks_from_the_redis_broker(redis_url):
    saved = {
        key: celery_app.conf[key] for key in ("broker_url", "result_backend", "task_always_eager")
    }
    celery_app.conf.update(broker_url=redis_url, result_backend=redis_url, task_always_eager=False)
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            result = ping.delay()
            assert result.get(timeout=15) == "pong"
            assert result.successful()
    finally:
        celery_app.conf.update(saved)
