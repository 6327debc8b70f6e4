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
from celery import Celery

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
def test_a_celery_worker_runs_tasks_from_the_redis_broker(redis_url, tmp_path):
    """A real worker process, started as in production, takes a task from Redis."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.sqlite3'}",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "-Q",
            queue,
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = Celery("test-client", broker=redis_url, backend=redis_url)
    try:
        result = client.send_task("portal.ping", queue=queue)
        assert result.get(timeout=60) == "pong"
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        client.close()
