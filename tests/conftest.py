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

from portal import services
from portal.audit import Actor
from portal.identifiers import ins_key, luhn_complete
from portal.models import (
    Affiliation,
    AuditEvent,
    CareRole,
    Establishment,
    IdentityStatus,
    InsOid,
    Professional,
    User,
)

pytest_plugins = ["tests.orthanc"]

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
PASSWORD = "correct-horse-battery-staple"


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


# --- The world of the tests -------------------------------------------------------------------

_rpps_counter = iter(range(1, 10_000))


def make_professional(
    *,
    email,
    first_name,
    last_name,
    specialty="",
    profession="medecin",
    establishment=None,
    title="Dr",
    with_rpps=True,
) -> Professional:
    user = User.objects.create_user(email, PASSWORD, first_name=first_name, last_name=last_name)
    professional = Professional.objects.create(
        user=user,
        title=title,
        profession=profession,
        specialty=specialty,
        rpps=luhn_complete(f"9970{next(_rpps_counter):06d}") if with_rpps else None,
    )
    if establishment is not None:
        Affiliation.objects.create(
            professional=professional, establishment=establishment, is_primary=True
        )
    return professional


def make_patient(
    *,
    birth_name,
    first_names,
    sex="F",
    birth_date=dt.date(1956, 3, 12),
    place="37261",
    order=1,
    qualified=True,
    establishment=None,
    ipp="",
):
    first13 = f"{2 if sex == 'F' else 1}{birth_date:%y%m}{place}{order:03d}"
    result = services.patient_register(
        traits=services.PatientTraits(
            birth_name=birth_name,
            first_names=first_names,
            sex=sex,
            birth_date=birth_date,
            birth_place_code=place,
        ),
        ins_matricule=first13 + ins_key(first13),
        ins_oid=InsOid.NIR_TEST,
        identity_status=IdentityStatus.QUALIFIED if qualified else IdentityStatus.RETRIEVED,
        establishment=establishment,
        ipp=ipp,
        by=Actor.system("tests"),
    )
    return result.patient


class World:
    """The named personas: who they are is what the tests are about."""


@pytest.fixture
def world(db) -> World:
    w = World()
    w.tours = Establishment.objects.create(
        name="CHRU de Tours",
        finess="370000481",
        city="Tours",
        kind="chu",
        patient_id_issuer="CHRU-TOURS",
    )
    w.bourges = Establishment.objects.create(
        name="CH de Bourges", finess="180000028", city="Bourges", kind="ch"
    )
    w.practice = Establishment.objects.create(
        name="MSP de Vierzon", finess="180009993", city="Vierzon", kind="cabinet"
    )
    w.oncologist = make_professional(
        email="oncologue@mirc.test",
        first_name="Claire",
        last_name="Martin",
        specialty="oncologie_medicale",
        establishment=w.tours,
    )
    w.surgeon = make_professional(
        email="chirurgien@mirc.test",
        first_name="Antoine",
        last_name="Rousseau",
        specialty="chirurgie_thoracique",
        establishment=w.tours,
        title="Pr",
    )
    w.gp = make_professional(
        email="generaliste@mirc.test",
        first_name="Pierre",
        last_name="Lemoine",
        specialty="medecine_generale",
        establishment=w.practice,
    )
    w.outsider = make_professional(
        email="radiologue.bourges@mirc.test",
        first_name="Paul",
        last_name="Lefèvre",
        specialty="radiologie",
        establishment=w.bourges,
    )
    w.coordinator = make_professional(
        email="coordination@mirc.test",
        first_name="Julie",
        last_name="Perrin",
        profession="coordinateur",
        establishment=w.tours,
        title="Mme",
        with_rpps=False,
    )
    w.auditor_user = User.objects.create_user(
        "dpo@mirc.test", PASSWORD, first_name="Nathalie", last_name="Simon"
    )
    from django.contrib.auth.models import Permission

    w.auditor_user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    w.identity_reviewer = User.objects.create_user(
        "identitovigilance@mirc.test", PASSWORD, first_name="Martine", last_name="Robin"
    )
    w.identity_reviewer.user_permissions.add(
        Permission.objects.get(codename="change_identityconflict")
    )
    w.admin_user = User.objects.create_superuser("admin@mirc.test", PASSWORD)

    w.patient = make_patient(
        birth_name="Dupont", first_names="Jeanne Marie", establishment=w.tours, ipp="T100001"
    )
    w.other_patient = make_patient(
        birth_name="Durand",
        first_names="Jean-Pierre Louis",
        sex="M",
        birth_date=dt.date(1949, 7, 2),
        place="18033",
        order=2,
        establishment=w.bourges,
        ipp="B100002",
    )
    system = Actor.system("tests")
    services.care_relationship_add(
        patient=w.patient, professional=w.oncologist, role=CareRole.REFERRING, by=system
    )
    services.care_relationship_add(
        patient=w.patient, professional=w.gp, role=CareRole.GP, by=system
    )
    services.care_relationship_add(
        patient=w.other_patient, professional=w.outsider, role=CareRole.REFERRING, by=system
    )
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
