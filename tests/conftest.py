"""Shared fixtures: the named personas of the tests, and access to real services.

A test that needs a real service (PostgreSQL, Redis, later Orthanc and Chromium) asks for
its fixture; when the service is absent the test is skipped with the reason, or fails when
REQUIRE_SERVICES=1 (CI), so that a missing service never passes silently.
"""

import datetime as dt
import os
from urllib.parse import urlparse, urlunparse

import pytest
from django.core.cache import caches
from django.test import Client

from portal.models import AuditEvent, CareRole
from tests import builders

pytest_plugins = ["tests.orthanc"]

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def require_service(name: str, error: str | None) -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) when ``error`` says the service is absent."""
    if error is None:
        return
    message = f"{name} unavailable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
    pytest.skip(message)


def pytest_collection_modifyitems(items):
    """Tests driving Chromium are also marked ``browser``: the CI runs them in the embedded
    default's pass only (they serve the demo on SQLite, whatever DATABASE_URL says)."""
    for item in items:
        if any(mark.args == ("chromium",) for mark in item.iter_markers("service")):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True, scope="session")
def _tasks_run_in_the_test_process():
    """Tasks run inline, even on the production shape's Redis broker: a test sees their
    effect at once. A real worker taking tasks from Redis is tested on its own
    (tests/test_production_shape.py)."""
    from portal.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ARCHIVE_ROOT = tmp_path / "archive"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PACKAGES_DIR = tmp_path / "packages"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    # Rate limits, used TOTP codes, access grants and image frames live in caches, and the
    # synthetic studies have deterministic UIDs: no test inherits another's entries.
    for alias in settings.CACHES:
        caches[alias].clear()


# --- Real services ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
        error = None
    except redis.RedisError as exc:
        error = f"{url}: {exc}"
    require_service("Redis", error)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server's maintenance database, where test databases can be created."""
    import psycopg

    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        # The same server as the suite's, but its maintenance database: the suite's own
        # database name need not exist (pytest-django works in test_<name>).
        url = urlunparse(urlparse(url)._replace(path="/postgres"))
    else:
        url = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url, connect_timeout=3).close()
        error = None
    except psycopg.Error as exc:
        error = f"{url}: {exc}".strip()
    require_service("PostgreSQL", error)
    return url


# --- The world of the tests (built from tests/builders.py) ----------------------------------------

PASSWORD = builders.PASSWORD
make_professional = builders.professional
make_patient = builders.patient


class World:
    """The named personas: who they are is what the tests are about."""


@pytest.fixture
def world(db) -> World:
    w = World()
    w.tours = builders.establishment(
        name="CHRU de Tours",
        finess="370000481",
        city="Tours",
        kind="chu",
        patient_id_issuer="CHRU-TOURS",
    )
    w.bourges = builders.establishment(
        name="CH de Bourges", finess="180000028", city="Bourges", kind="ch"
    )
    w.practice = builders.establishment(
        name="MSP de Vierzon", finess="180009993", city="Vierzon", kind="cabinet"
    )
    w.oncologist = builders.professional(
        email="oncologue@mirc.test",
        first_name="Claire",
        last_name="Martin",
        specialty="oncologie_medicale",
        establishment=w.tours,
    )
    w.surgeon = builders.professional(
        email="chirurgien@mirc.test",
        first_name="Antoine",
        last_name="Rousseau",
        specialty="chirurgie_thoracique",
        establishment=w.tours,
        title="Pr",
    )
    w.gp = builders.professional(
        email="generaliste@mirc.test",
        first_name="Pierre",
        last_name="Lemoine",
        specialty="medecine_generale",
        establishment=w.practice,
    )
    w.outsider = builders.professional(
        email="radiologue.bourges@mirc.test",
        first_name="Paul",
        last_name="Lefèvre",
        specialty="radiologie",
        establishment=w.bourges,
    )
    w.coordinator = builders.professional(
        email="coordination@mirc.test",
        first_name="Julie",
        last_name="Perrin",
        profession="coordinateur",
        establishment=w.tours,
        title="Mme",
        with_rpps=False,
    )
    w.auditor_user = builders.user(
        email="dpo@mirc.test",
        first_name="Nathalie",
        last_name="Simon",
        permissions=["portal.view_auditevent"],
    )
    w.identity_reviewer = builders.user(
        email="identitovigilance@mirc.test",
        first_name="Martine",
        last_name="Robin",
        permissions=["portal.change_identityconflict"],
    )
    w.admin_user = builders.user(email="admin@mirc.test", superuser=True)

    w.patient = builders.patient(
        birth_name="Dupont", first_names="Jeanne Marie", establishment=w.tours, ipp="T100001"
    )
    w.other_patient = builders.patient(
        birth_name="Durand",
        first_names="Jean-Pierre Louis",
        sex="M",
        birth_date=dt.date(1949, 7, 2),
        place="18033",
        order=2,
        establishment=w.bourges,
        ipp="B100002",
    )
    builders.care_team(w.patient, (w.oncologist, CareRole.REFERRING), (w.gp, CareRole.GP))
    builders.care_team(w.other_patient, (w.outsider, CareRole.REFERRING))
    return w


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture(scope="session")
def seeded_demo(tmp_path_factory):
    """The demo's database, archive and media, seeded once per session (tests/demo_seed.py);
    browser modules copy it rather than seed again."""
    from tests.demo_seed import seed

    workdir = tmp_path_factory.mktemp("demo-seed")
    seed(workdir)
    return workdir


@pytest.fixture
def audit_count():
    """A callable returning how many audit events exist now."""
    return lambda: AuditEvent.objects.count()
