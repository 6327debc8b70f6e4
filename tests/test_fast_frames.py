"""Warm frames answered before Django (production shape, Redis), and only while allowed."""

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.core.asgi import get_asgi_application
from django.core.cache import caches
from django.db import connections

from imaging.fast_frames import FastFrames
from imaging.services import viewer_token_issue
from portal.audit import Actor
from portal.models import CareRelationship
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
    response = await communicator.get_response(timeout=10)
    # Let Django finish the request (request_finished gives its database connection back
    # to the pool) before the test's event loop goes away.
    await communicator.wait(timeout=10)
    headers = {name.lower(): value for name, value in response["headers"]}
    return response["status"], headers, response["body"]


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
