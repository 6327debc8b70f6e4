"""The expert's image reads of the priors show as tele-expertise reads in the audit trail.

The data protection officer reads the trail by purpose: the images the expert loads through
DICOMweb while reading a claimed request's priors are read for the tele-expertise, not for
care, on the first read, on the reads answered from the cached grant, and the fast frame
path (Redis, before Django) writes no read of its own.
"""

import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.core.cache import caches
from django.db import connections
from django.urls import reverse

from expertise import services
from imaging.dicomweb import Caller, _audit_key, _grant_key
from imaging.fast_frames import FastFrames
from imaging.models import Study
from imaging.services import viewer_token_issue
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditPurpose
from tests.conftest import client_for
from tests.expertise_world import expertise_world, sent_request
from tests.permission_matrix import imaged_study


def _tele(world):
    expertise_world(world)
    # A prior of the same patient made at another establishment, not attached to the request.
    prior = imaged_study(world, key="prior-bourges")
    Study.objects.filter(pk=prior["study"].pk).update(establishment=world.bourges)
    world.prior = prior
    world.request = sent_request(world)
    services.request_claim(request=world.request, by=Actor(user=world.teleradiologist.user))
    return world


@pytest.fixture
def tele(world):
    return _tele(world)


def _metadata(w):
    return reverse("dicomweb-study-metadata", args=[w.prior["study_uid"]])


def _image_reads(user, study_uid):
    return AuditEvent.objects.filter(
        actor=user,
        event_id=AuditEventId.INSTANCES_ACCESSED,
        object_type="imaging.study",
        object_id=study_uid,
    ).order_by("pk")


def test_the_expert_reading_the_priors_images_is_audited_for_the_tele_expertise(tele):
    expert = client_for(tele.teleradiologist.user)
    assert expert.get(_metadata(tele)).status_code == 200
    read = _image_reads(tele.teleradiologist.user, tele.prior["study_uid"]).get()
    assert read.purpose == AuditPurpose.EXPERTISE
    assert read.patient == tele.patient


def test_the_care_team_reading_the_same_images_is_audited_for_care(tele):
    gp = client_for(tele.gp.user)
    assert gp.get(_metadata(tele)).status_code == 200
    assert _image_reads(tele.gp.user, tele.prior["study_uid"]).get().purpose == AuditPurpose.CARE


def test_reads_answered_from_the_cached_grant_keep_the_tele_expertise_purpose(tele):
    expert = client_for(tele.teleradiologist.user)
    assert expert.get(_metadata(tele)).status_code == 200
    # The audit window closes (its dedupe key goes) while the access grant is still cached:
    # the next read is audited again, from the cached grant.
    user = tele.teleradiologist.user
    caller = Caller(user, None, Actor(user=user))
    default = caches["default"]
    assert default.get(_grant_key(caller, tele.prior["study_uid"])) is not None
    assert default.delete(_audit_key(caller, tele.prior["study"]))
    assert expert.get(_metadata(tele)).status_code == 200

    reads = _image_reads(tele.teleradiologist.user, tele.prior["study_uid"])
    assert [read.purpose for read in reads] == [AuditPurpose.EXPERTISE] * 2


OCTETS = b'multipart/related; type="application/octet-stream"'


@pytest.fixture
def redis_caches(settings, redis_url):
    base = {"BACKEND": "portal.cache.SharedRedisCache", "LOCATION": redis_url}
    settings.CACHES = {
        "default": {**base, "KEY_PREFIX": "expert-purpose-test"},
        "frames": {**base, "KEY_PREFIX": "expert-purpose-test-frames"},
    }
    caches["default"].clear()
    yield
    caches["default"].clear()


async def _status_and_headers(app, path, *headers):
    from channels.testing import HttpCommunicator

    communicator = HttpCommunicator(
        app, "GET", path, headers=[(b"host", b"localhost"), (b"accept", OCTETS), *headers]
    )
    communicator.sent_request = True
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=10)
    while True:
        message = await communicator.receive_output(timeout=10)
        if not message.get("more_body", False):
            break
    await communicator.wait(timeout=10)
    return start["status"], {name.lower(): value for name, value in start["headers"]}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_fast_frame_path_writes_no_read_of_its_own(world, redis_caches):
    """Warm frames answered before Django are covered by the read Django audited (for the
    tele-expertise): the fast path adds no event, so none can carry a wrong purpose."""
    w = await sync_to_async(_tele)(world)
    _token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=w.teleradiologist.user), study=w.prior["study"]
    )
    app = FastFrames(get_asgi_application())
    path = (
        f"/dicomweb/studies/{w.prior['study_uid']}/series/{w.prior['series_uid']}"
        f"/instances/{w.prior['sop_uid']}/frames/1"
    )
    bearer = (b"authorization", f"Bearer {raw}".encode())
    try:
        status, headers = await _status_and_headers(app, path, bearer)
        assert status == 200
        assert b"content-security-policy" in headers  # Django answered and audited
        status, headers = await _status_and_headers(app, path, bearer)
        assert status == 200
        assert b"content-security-policy" not in headers  # the fast path answered

        reads = await sync_to_async(list)(
            _image_reads(w.teleradiologist.user, w.prior["study_uid"]).values_list(
                "purpose", flat=True
            )
        )
        assert reads == [AuditPurpose.EXPERTISE]
    finally:
        await sync_to_async(connections.close_all)()
