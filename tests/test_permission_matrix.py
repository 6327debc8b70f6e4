"""Every route of the project against the permission matrix: the main defence against IDOR."""

import re
import uuid

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from portal.models import (
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    CareRelationship,
    IdentityConflict,
    Patient,
)
from tests.conftest import client_for
from tests.permission_matrix import (
    MATRIX,
    THIRD_PARTY_PREFIXES,
    WEBSOCKET_MATRIX,
    DicomWebRoute,
    GlobalPermission,
    ObjectRoute,
    Public,
    ShareLinkRoute,
    SignedIn,
    TokenRoute,
    imaged_study,
)


def _iter_routes(patterns, prefix="", namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, [namespace, pattern.namespace])) or None
            yield from _iter_routes(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield name, prefix + str(pattern.pattern), pattern


ROUTES = list(_iter_routes(get_resolver().url_patterns))
PROJECT_ROUTES = [r for r in ROUTES if not r[1].lstrip("^").startswith(tuple(THIRD_PARTY_PREFIXES))]
# The admin's own sign-in and sign-out pages are the only ones open to non-staff.
ADMIN_ROUTES = [
    r
    for r in ROUTES
    if r[1].lstrip("^").startswith("admin/") and r[0] not in ("admin:login", "admin:logout")
]
ALLAUTH_ROUTES = [r for r in ROUTES if r[1].lstrip("^").startswith("accounts/")]

# Values that satisfy the converters of library routes, by argument name.
SAMPLE_ARGUMENTS = {
    "app_label": "portal",
    "object_id": "1",
    "content_type_id": "1",
    "url": "x",
    "key": "x",
    "uidb36": "1",
    "provider_id": "psc",
    "id": "1",
    "pk": "1",
}


def _sample_url(name, route):
    groups = re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route)
    kwargs = {a or b: SAMPLE_ARGUMENTS.get(a or b, "1") for a, b in groups}
    if name:
        return reverse(name, kwargs=kwargs)
    # Unnamed library routes: substitute the sample values into the route itself.
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: kwargs[m.group(1)], route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: kwargs[m.group(1)], path)
    return "/" + path.lstrip("^").rstrip("$").replace("\\Z", "")


def test_every_route_has_an_entry():
    missing = []
    for name, route, _pattern in PROJECT_ROUTES:
        if name not in MATRIX:
            missing.append(f"{route} (name={name!r})")
    assert not missing, "Routes missing from tests/permission_matrix.py: " + ", ".join(missing)
    unknown = set(MATRIX) - {name for name, _route, _pattern in PROJECT_ROUTES}
    assert not unknown, f"Matrix entries without a route: {sorted(unknown)}"


def test_every_route_is_named():
    # The matrix and the audit-coverage test key on names.
    assert all(name for name, _route, _pattern in PROJECT_ROUTES)


def _call(client, entry, url, world):
    data = entry.data(world) if getattr(entry, "data", None) else {}
    return getattr(client, entry.method)(url, data)


def _is_login_redirect(response):
    return response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(
    "name", sorted(n for n, e in MATRIX.items() if not isinstance(e, DicomWebRoute))
)
def test_anonymous(name, world):
    entry = MATRIX[name]
    kwargs = (
        entry.kwargs(world) if isinstance(entry, ObjectRoute | TokenRoute | ShareLinkRoute) else {}
    )
    before = (
        AuditEvent.objects.filter(outcome=AuditOutcome.SUCCESS)
        .exclude(event_id=AuditEventId.USER_AUTHENTICATION)
        .count()
    )
    response = _call(client_for(None), entry, reverse(name, kwargs=kwargs), world)
    if isinstance(entry, Public | TokenRoute):
        assert response.status_code == entry.expect
    elif isinstance(entry, ShareLinkRoute):
        # No account: the link's own pages answer, the shared contents wait for the code.
        assert response.status_code == (302 if entry.granted else 200), name
        if entry.granted:
            assert response["Location"] == reverse(
                "share-landing", kwargs={"token": kwargs["token"]}
            )
    else:
        assert _is_login_redirect(response), f"{name}: {response.status_code}"
        after = (
            AuditEvent.objects.filter(outcome=AuditOutcome.SUCCESS)
            .exclude(event_id=AuditEventId.USER_AUTHENTICATION)
            .count()
        )
        assert after == before, "an anonymous request must not reach patient data"


@pytest.mark.parametrize("name", sorted(n for n, e in MATRIX.items() if isinstance(e, SignedIn)))
def test_signed_in(name, world):
    entry = MATRIX[name]
    response = _call(client_for(world.outsider.user), entry, reverse(name), world)
    assert response.status_code == entry.expect


@pytest.mark.parametrize(
    "name", sorted(n for n, e in MATRIX.items() if isinstance(e, GlobalPermission))
)
def test_global_permission(name, world):
    entry = MATRIX[name]
    url = reverse(name)
    for user in (world.oncologist.user, world.coordinator.user):
        refusals = AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE, actor=user
        )
        assert client_for(user).get(url).status_code == 403, f"{name} open to {user}"
        assert refusals.count() == 1, "a refused access is audited"
    assert client_for(entry.holder(world)).get(url).status_code == entry.expect


@pytest.mark.parametrize("name", sorted(n for n, e in MATRIX.items() if isinstance(e, TokenRoute)))
def test_token_route_refuses_unknown_and_revoked_tokens(name, world):
    entry = MATRIX[name]
    kwargs = entry.kwargs(world)
    unknown = reverse(name, kwargs={**kwargs, "token": "not-a-token"})
    assert client_for(None).get(unknown).status_code == 404
    entry.revoke(world)
    assert client_for(None).get(reverse(name, kwargs=kwargs)).status_code == 404


OBJECT_ROUTES = sorted(n for n, e in MATRIX.items() if isinstance(e, ObjectRoute))


def _state(world):
    """What an outsider's request must not change."""
    return (
        Patient.objects.count(),
        list(CareRelationship.objects.order_by("pk").values_list("pk", "ended_at")),
        list(IdentityConflict.objects.order_by("pk").values_list("pk", "resolved_at")),
        AuditEvent.objects.exclude(
            event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE
        )
        .exclude(event_id=AuditEventId.USER_AUTHENTICATION)
        .count(),
    )


def _unknown_kwargs(entry, world) -> dict:
    return {
        key: uuid.UUID(int=987654) if isinstance(value, uuid.UUID) else 987654
        for key, value in entry.kwargs(world).items()
    }


def _new_refusals(last):
    return list(
        AuditEvent.objects.filter(
            pk__gt=last, event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE
        )
    )


def _last_event_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _headers(response) -> dict:
    # The length follows the page's own address, compared in the body.
    return {
        key.lower(): value for key, value in response.items() if key.lower() != "content-length"
    }


def _body(response) -> bytes:
    """The page without what differs from one request to the next: the CSRF token, masked
    afresh each time, the seconds left before the idle sign-out, and the page's own address
    (the language switch returns to it)."""
    body = re.sub(
        rb'(name="csrfmiddlewaretoken" value|data-expires-in)="[^"]*"', b"", response.content
    )
    return body.replace(response.wsgi_request.get_full_path().encode(), b"<this page>")


@pytest.mark.parametrize("name", OBJECT_ROUTES)
def test_outsider_gets_404_and_changes_nothing(name, world):
    entry = MATRIX[name]
    url = reverse(name, kwargs=entry.kwargs(world))
    # The refusal names the object's patient, so it shows in that patient's access report.
    expected_patient = entry.refusal_patient(world) if entry.refusal_patient else None
    for outsider in [entry.outsider, *entry.extra_outsiders]:
        user = outsider(world)
        client = client_for(user)
        before = _state(world)
        last = _last_event_pk()
        response = _call(client, entry, url, world)
        assert response.status_code == 404, f"{name} as {user}: {response.status_code}"
        assert _state(world) == before
        [refusal] = _new_refusals(last)
        assert refusal.actor == user
        assert refusal.patient == expected_patient, f"{name} as {user}"
    # Existence never leaks: a refused object and a missing one get the same answer.
    missing = _call(client, entry, reverse(name, kwargs=_unknown_kwargs(entry, world)), world)
    assert missing.status_code == 404
    assert _body(missing) == _body(response)
    assert _headers(missing) == _headers(response)


@pytest.mark.parametrize("name", OBJECT_ROUTES)
def test_entitled(name, world):
    entry = MATRIX[name]
    response = _call(
        client_for(entry.entitled(world)), entry, reverse(name, kwargs=entry.kwargs(world)), world
    )
    assert response.status_code == entry.expect


@pytest.mark.parametrize("name", OBJECT_ROUTES)
def test_unknown_object_is_404_like_a_forbidden_one(name, world):
    entry = MATRIX[name]
    url = reverse(name, kwargs=_unknown_kwargs(entry, world))
    client = client_for(entry.entitled(world))
    last = _last_event_pk()
    response = _call(client, entry, url, world)
    assert response.status_code == 404
    # Nothing exists to name: the refusal, when there is one, names no patient.
    assert [event.patient for event in _new_refusals(last)] in ([], [None])


# --- Audit coverage: every view that shows or changes patient data writes exactly one event --

AUDITED = sorted(n for n, e in MATRIX.items() if getattr(e, "audit_event", None))


def test_patient_data_views_declare_their_audit_event():
    silent = [
        n
        for n, e in MATRIX.items()
        if getattr(e, "patient_data", False)
        and not getattr(e, "audit_event", None)
        and getattr(e, "method", "get") == "get"
        and n != "patient-register"
    ]
    assert not silent, f"patient-data views without an audit event: {silent}"


@pytest.mark.parametrize("name", AUDITED)
def test_writes_exactly_one_audit_event(name, world):
    entry = MATRIX[name]
    user = (
        entry.entitled(world)
        if isinstance(entry, ObjectRoute)
        else (entry.holder(world) if isinstance(entry, GlobalPermission) else world.oncologist.user)
    )
    kwargs = entry.kwargs(world) if isinstance(entry, ObjectRoute) else {}
    url = reverse(name, kwargs=kwargs)
    client = client_for(user)  # signing in writes its own event: count after it
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    response = _call(client, entry, url, world)
    assert response.status_code == entry.expect
    new = list(AuditEvent.objects.filter(pk__gt=last))
    assert len(new) == 1, f"{name} wrote {[(e.event_id, e.action) for e in new]}"
    event = new[0]
    assert event.event_id == entry.audit_event
    assert event.actor == user
    assert event.outcome == AuditOutcome.SUCCESS
    if isinstance(entry, ObjectRoute) and entry.patient:
        assert event.patient == entry.patient(world)


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n, e in MATRIX.items()
        if getattr(e, "patient_data", False) and getattr(e, "method", "get") == "get"
    ),
)
def test_patient_pages_are_never_cached(name, world):
    entry = MATRIX[name]
    user = entry.entitled(world) if isinstance(entry, ObjectRoute) else world.oncologist.user
    kwargs = entry.kwargs(world) if isinstance(entry, ObjectRoute) else {}
    response = client_for(user).get(reverse(name, kwargs=kwargs))
    assert "no-store" in response["Cache-Control"]


# --- Library routes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,route,pattern", ADMIN_ROUTES, ids=[r[1] for r in ADMIN_ROUTES])
def test_admin_is_staff_only(name, route, pattern, world):
    url = _sample_url(name, route)
    for user in (None, world.oncologist.user, world.auditor_user):
        response = client_for(user).get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], (
            f"{url} as {user}: {response.status_code}"
        )


@pytest.mark.parametrize("name,route,pattern", ALLAUTH_ROUTES, ids=[r[1] for r in ALLAUTH_ROUTES])
def test_allauth_routes_answer_anonymous_without_error(name, route, pattern, db):
    response = client_for(None).get(_sample_url(name, route))
    assert response.status_code < 500


def test_admin_offers_no_patient_data():
    from django.contrib import admin

    registered = {model._meta.label for model in admin.site._registry}
    assert not registered & {
        "portal.Patient",
        "portal.CareRelationship",
        "portal.AuditEvent",
        "portal.PatientIdentifier",
        "portal.IdentityConflict",
    }


# --- WebSocket routes -------------------------------------------------------------------------


def test_every_websocket_route_has_an_entry():
    from portal.routing import websocket_urlpatterns

    names = {pattern.name for pattern in websocket_urlpatterns}
    assert names == set(WEBSOCKET_MATRIX)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("route", sorted(WEBSOCKET_MATRIX))
async def test_websocket_refuses_anonymous(route):
    from portal.asgi import application
    from portal.routing import websocket_urlpatterns

    pattern = next(p for p in websocket_urlpatterns if p.name == route)
    path = "/" + re.sub(
        r"<[^>]+>",
        lambda m: "6f1c2d3e-0000-4000-8000-000000000001" if "uuid:" in m.group() else "1",
        str(pattern.pattern),
    )
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


# --- DICOMweb service --------------------------------------------------------------------------

DICOMWEB = sorted(n for n, e in MATRIX.items() if isinstance(e, DicomWebRoute))


def _dicomweb_get(client, name, world, **headers):
    entry = MATRIX[name]
    url = reverse(name, kwargs=entry.kwargs(world))
    if entry.accept:
        headers.setdefault("HTTP_ACCEPT", entry.accept)
    return client.get(url, **headers)


@pytest.mark.parametrize("name", DICOMWEB)
def test_dicomweb_anonymous_gets_401(name, world):
    response = _dicomweb_get(client_for(None), name, world)
    assert response.status_code == 401


@pytest.mark.parametrize("name", DICOMWEB)
def test_dicomweb_outsider_gets_404(name, world):
    entry = MATRIX[name]
    imaged_study(world)
    response = _dicomweb_get(client_for(world.outsider.user), name, world)
    if entry.search:
        assert response.status_code == 200
        assert response.json() == []
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("name", DICOMWEB)
def test_dicomweb_entitled(name, world):
    entry = MATRIX[name]
    imaged_study(world)
    response = _dicomweb_get(client_for(world.gp.user), name, world)
    assert response.status_code == entry.expect, getattr(response, "content", b"")[:300]
    if entry.search:
        assert [s["0020000D"]["Value"][0] for s in response.json()] == [
            imaged_study(world)["study_uid"]
        ]


@pytest.mark.parametrize("name", [n for n in DICOMWEB if not MATRIX[n].search])
def test_dicomweb_token_of_another_study_gets_404(name, world):
    from imaging.services import viewer_token_issue
    from portal.audit import Actor

    other = imaged_study(world, key="another-study")["study"]
    _token, raw = viewer_token_issue(by=Actor(user=world.gp.user), study=other)
    response = _dicomweb_get(Client(), name, world, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 404
    # The same token opens its own study.
    own = client_for(None).get(
        reverse("dicomweb-study-metadata", args=[other.study_instance_uid]),
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert own.status_code == 200


# --- Shares with a doctor who has no account (imaging.shares) -----------------------------------

SHARE_LINK_ROUTES = sorted(n for n, e in MATRIX.items() if isinstance(e, ShareLinkRoute))


def _share_code_sent(client, token, django_capture_on_commit_callbacks) -> str:
    """The code the landing page sends, read from the outgoing mail."""
    from django.core import mail

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("share-landing", kwargs={"token": token}))
    return re.search(r"\b(\d{6})\b", mail.outbox[-1].body).group(1)


@pytest.mark.parametrize("name", SHARE_LINK_ROUTES)
def test_share_link_unknown_token_is_404(name, world):
    kwargs = {**MATRIX[name].kwargs(world), "token": "not-a-share-token-at-all"}
    assert Client().get(reverse(name, kwargs=kwargs)).status_code == 404


@pytest.mark.parametrize("name", SHARE_LINK_ROUTES)
def test_share_link_wrong_code_opens_nothing(name, world, django_capture_on_commit_callbacks):
    entry = MATRIX[name]
    kwargs = entry.kwargs(world)
    client = Client()
    code = _share_code_sent(client, kwargs["token"], django_capture_on_commit_callbacks)
    wrong = "000000" if code != "000000" else "111111"
    page = client.post(reverse("share-code", kwargs={"token": kwargs["token"]}), {"code": wrong})
    assert page.status_code == 200 and page.context["form"].errors
    response = _call(client, entry, reverse(name, kwargs=kwargs), world)
    assert response.status_code == (302 if entry.granted else 200)


@pytest.mark.parametrize("name", SHARE_LINK_ROUTES)
def test_share_link_with_the_code(name, world, django_capture_on_commit_callbacks):
    from imaging.models import Share

    entry = MATRIX[name]
    kwargs = entry.kwargs(world)
    client = Client()
    code = _share_code_sent(client, kwargs["token"], django_capture_on_commit_callbacks)
    assert client.post(reverse("share-code", kwargs={"token": kwargs["token"]}), {"code": code})
    last = _last_event_pk()
    response = _call(client, entry, reverse(name, kwargs=kwargs), world)
    if not entry.granted:
        # Past the code, the link's own pages lead to the contents.
        assert response.status_code == (302 if name == "share-landing" else 200)
        return
    assert response.status_code == entry.expect
    assert "no-store" in response["Cache-Control"]
    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert event.event_id == entry.opening_audit_event
    assert event.patient == world.patient
    assert event.actor is None and event.actor_name.startswith("partage ")
    assert Share.objects.get().view_count == (1 if entry.counts_view else 0)


@pytest.mark.parametrize("name", SHARE_LINK_ROUTES)
def test_share_link_revoked_or_expired_is_410(name, world, django_capture_on_commit_callbacks):
    import datetime as dt

    from django.utils import timezone

    from imaging import shares
    from imaging.models import Share
    from portal.audit import Actor

    entry = MATRIX[name]
    kwargs = entry.kwargs(world)
    client = Client()
    code = _share_code_sent(client, kwargs["token"], django_capture_on_commit_callbacks)
    client.post(reverse("share-code", kwargs={"token": kwargs["token"]}), {"code": code})
    share = Share.objects.get()
    Share.objects.filter(pk=share.pk).update(
        created_at=timezone.now() - dt.timedelta(days=2),
        expires_at=timezone.now() - dt.timedelta(seconds=1),
    )
    url = reverse(name, kwargs=kwargs)
    assert _call(client, entry, url, world).status_code == 410
    Share.objects.filter(pk=share.pk).update(expires_at=timezone.now() + dt.timedelta(days=1))
    assert _call(client, entry, url, world).status_code in (200, 302)
    shares.share_revoke(share=share, by=Actor(user=world.oncologist.user))
    response = _call(client, entry, url, world)
    assert response.status_code == 410
    assert "no-store" in response["Cache-Control"]
