"""Warm frames answered before Django (production shape, Redis), and only while allowed."""

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.core.asgi import get_asgi_application
from django.core.cache import caches
from django.db import connections

from imaging.fast_frames import FastFrames
from imaging.models import Study
from imaging.services import viewer_token_issue
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, CareRelationship
from portal.services import care_relationship_end
from tests.permission_matrix import imaged_study

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

OCTETS = b'multipart/related; type="application/octet-stream"'


@pytest.fixture
def redis_caches(settings, redis_url):
    base = {"BACKEND": "portal.cache.SharedRedisCache", "LOCATION": redis_url}
    settings.CACHES = {
        "default": {**base, "KEY_PREFIX": "fast-test"},
        "frames": {**base, "KEY_PREFIX": "fast-test-frames"},
    }
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest_asyncio.fixture(autouse=True)
async def _connections_given_back():
    yield
    # sync_to_async keeps one worker thread: its connection would keep the test database open.
    await sync_to_async(connections.close_all)()


async def _get(app, path, *headers):
    communicator = HttpCommunicator(
        app, "GET", path, headers=[(b"host", b"localhost"), (b"accept", OCTETS), *headers]
    )
    # Read the ASGI messages ourselves: a streamed answer ends with a body message without
    # "body" (allowed by the ASGI spec, where it defaults to b""), which
    # HttpCommunicator.get_response does not accept.
    communicator.sent_request = True
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=10)
    assert start["type"] == "http.response.start"
    body = b""
    while True:
        message = await communicator.receive_output(timeout=10)
        assert message["type"] == "http.response.body"
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    # Let Django finish the request (request_finished gives its database connection back
    # to the pool) before the test's event loop goes away.
    await communicator.wait(timeout=10)
    headers = {name.lower(): value for name, value in start["headers"]}
    return start["status"], headers, body


def _frame(body: bytes) -> bytes:
    """The payload of a one-part multipart answer."""
    return body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]


async def test_a_warm_frame_skips_django_until_access_changes(world, redis_caches):
    study = await sync_to_async(imaged_study)(world)
    _token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=study["study"]
    )
    app = FastFrames(get_asgi_application())
    path = (
        f"/dicomweb/studies/{study['study_uid']}/series/{study['series_uid']}"
        f"/instances/{study['sop_uid']}/frames/1"
    )
    bearer = (b"authorization", f"Bearer {raw}".encode())

    status, headers, first = await _get(app, path, bearer)
    assert status == 200
    assert b"content-security-policy" in headers  # Django answered, and granted

    status, headers, again = await _get(app, path, bearer)
    assert status == 200
    assert b"content-security-policy" not in headers  # answered before Django
    assert headers[b"cache-control"] == b"no-store"
    assert _frame(again) == _frame(first)
    assert len(_frame(first)) == 32 * 32 * 2

    # The GP leaves the patient's care: the next frame goes through Django, and is refused.
    relationship = await sync_to_async(CareRelationship.objects.get)(
        patient=world.patient, professional=world.gp
    )
    await sync_to_async(care_relationship_end)(relationship=relationship, by=Actor.system("tests"))
    status, _headers, _body = await _get(app, path, bearer)
    assert status == 404


async def test_another_credential_gets_no_fast_answer(world, redis_caches):
    study = await sync_to_async(imaged_study)(world)
    _token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=study["study"]
    )
    app = FastFrames(get_asgi_application())
    path = (
        f"/dicomweb/studies/{study['study_uid']}/series/{study['series_uid']}"
        f"/instances/{study['sop_uid']}/frames/1"
    )
    assert (await _get(app, path, (b"authorization", f"Bearer {raw}".encode())))[0] == 200
    status, _headers, _body = await _get(app, path, (b"authorization", b"Bearer forged"))
    assert status == 401
    status, _headers, _body = await _get(app, path)
    assert status == 401


def _frames_path(study_uid, series_uid, sop_uid, frames="1") -> str:
    return f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frames}"


async def test_a_warm_frame_of_another_study_is_not_answered_under_a_granted_study(
    world, redis_caches
):
    """The attack on the fast path: the GP's token, granted on his patient's CT, asks for the
    other patient's frame (just warmed by her own doctor) under his study's path."""
    from tests.test_image_isolation import victim_study

    granted = await sync_to_async(imaged_study)(world)
    victim = await sync_to_async(victim_study)(world)
    app = FastFrames(get_asgi_application())
    _token, gp_raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=granted["study"]
    )
    _token, her_doctor_raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.outsider.user),
        study=await sync_to_async(Study.objects.get)(study_instance_uid=victim["study_uid"]),
    )
    gp = (b"authorization", f"Bearer {gp_raw}".encode())
    her_doctor = (b"authorization", f"Bearer {her_doctor_raw}".encode())
    own = _frames_path(granted["study_uid"], granted["series_uid"], granted["sop_uid"])
    hers = _frames_path(victim["study_uid"], victim["series_uid"], victim["sop_uid"])
    forged = _frames_path(granted["study_uid"], granted["series_uid"], victim["sop_uid"])

    # The GP's grant is live on the fast path, and her frame is warm in Redis.
    for path, credential in ((own, gp), (own, gp), (hers, her_doctor), (hers, her_doctor)):
        assert (await _get(app, path, credential))[0] == 200
    assert b"content-security-policy" not in (await _get(app, own, gp))[1]  # fast answers

    for query in ("", f"?token={gp_raw}", f"?a=1&token={gp_raw}"):
        credential = () if query else (gp,)
        status, headers, body = await _get(app, forged + query, *credential)
        assert status == 404
        assert b"content-security-policy" in headers  # Django refused it, not the fast path
    refusals = await sync_to_async(
        AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT,
            patient=world.other_patient,
            object_id=victim["sop_uid"],
        ).count
    )()
    assert refusals == 3


async def test_repeated_or_too_many_frames_go_to_django_and_are_refused(
    world, redis_caches, settings
):
    granted = await sync_to_async(imaged_study)(world)
    _token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=granted["study"]
    )
    app = FastFrames(get_asgi_application())
    bearer = (b"authorization", f"Bearer {raw}".encode())
    path = _frames_path(granted["study_uid"], granted["series_uid"], granted["sop_uid"])
    assert (await _get(app, path, bearer))[0] == 200
    assert (await _get(app, path, bearer))[0] == 200  # warm, fast path granted

    status, _headers, body = await _get(app, path + ",1,1,1", bearer)
    assert status == 400
    assert b"once" in body
    settings.DICOMWEB_MAX_FRAMES_PER_REQUEST = 2
    status, _headers, body = await _get(
        app,
        _frames_path(granted["study_uid"], granted["series_uid"], granted["sop_uid"], "1,2,3"),
        bearer,
    )
    assert status == 413
    assert b"at most 2 frames" in body
    settings.DICOMWEB_MAX_FRAMES_PER_REQUEST = 1000
    settings.DICOMWEB_MAX_ANSWER_BYTES = 1024  # a 32x32 16-bit frame is 2048 bytes
    status, headers, body = await _get(app, path, bearer)
    assert status == 413
    assert b"content-security-policy" in headers  # the warm frame was not answered fast


async def test_a_shortened_token_stops_the_fast_path_at_once(world, redis_caches):
    from django.utils import timezone

    from imaging.services import viewer_token_change_expiry

    granted = await sync_to_async(imaged_study)(world)
    token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=granted["study"]
    )
    app = FastFrames(get_asgi_application())
    bearer = (b"authorization", f"Bearer {raw}".encode())
    path = _frames_path(granted["study_uid"], granted["series_uid"], granted["sop_uid"])
    assert (await _get(app, path, bearer))[0] == 200
    assert b"content-security-policy" not in (await _get(app, path, bearer))[1]

    await sync_to_async(viewer_token_change_expiry)(
        token=token, expires_at=timezone.now(), by=Actor(user=world.gp.user)
    )
    status, headers, _body = await _get(app, path, bearer)
    assert status == 401
