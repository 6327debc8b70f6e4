"""Cold frames at archive speed: once a viewer opened a study (its series, its metadata),
frames missing from the cache are fetched from the DICOMweb archive (a real Orthanc) by the
fast path, before Django, and the series are read ahead; every refusal stays Django's."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.core.cache import caches

from imaging import fast_frames
from imaging.archive import get_archive
from imaging.async_archive import AsyncArchive
from imaging.fast_frames import FastFrames
from imaging.frames import EXPLICIT_LE
from imaging.grants import frame_key, member_key
from imaging.services import viewer_token_issue, viewer_token_revoke
from portal.audit import Actor
from tests.permission_matrix import imaged_study
from tests.test_fast_frames import _connections_given_back, _frame, _get, redis_caches  # noqa: F401
from tests.waiting import async_wait_until

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def on_orthanc(orthanc, settings, redis_caches):  # noqa: F811
    orthanc.reset()
    settings.ARCHIVE_URL = orthanc.url
    settings.ARCHIVE_TIMEOUT = 10.0
    yield orthanc
    orthanc.reset()


class CountingDjango:
    """Django's ASGI application, counting the requests that reach it."""

    def __init__(self):
        self.app = get_asgi_application()
        self.requests = 0

    async def __call__(self, scope, receive, send):
        self.requests += 1
        await self.app(scope, receive, send)


@pytest.fixture
def no_read_ahead(monkeypatch):
    """Frames stay cold after the study is opened: what the fast path fetches is its own."""
    monkeypatch.setattr(FastFrames, "start_read_ahead", lambda self, study, series: None)


def _paths(study):
    series = f"/dicomweb/studies/{study['study_uid']}/series/{study['series_uid']}"
    return series, f"{series}/instances/{study['sop_uid']}/frames/1"


async def _viewer(world, study):
    _token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=study["study"]
    )
    return _token, (b"authorization", f"Bearer {raw}".encode())


async def test_a_cold_frame_of_an_opened_study_is_fetched_without_django(
    world, on_orthanc, no_read_ahead
):
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    app = FastFrames(django)
    series_path, frame_path = _paths(study)

    status, _headers, _body = await _get(app, f"{series_path}/metadata", bearer)
    assert status == 200
    assert django.requests == 1
    frame_cache_key = frame_key(
        study["study_uid"], study["series_uid"], study["sop_uid"], 1, EXPLICIT_LE
    )
    assert caches["frames"].get(frame_cache_key) is None  # cold

    status, headers, body = await _get(app, frame_path, bearer)
    assert status == 200
    assert django.requests == 1  # no Django request for the cold frame
    assert headers[b"cache-control"] == b"no-store"
    stored = await sync_to_async(get_archive().retrieve_frames)(
        study["study_uid"], study["series_uid"], study["sop_uid"], [1]
    )
    assert _frame(body) == stored.frames[0]  # Orthanc's bytes, as Django would serve them
    # ...and it is now warm for every process.
    assert caches["frames"].get(frame_cache_key) == stored.frames[0]


async def test_a_revoked_viewer_or_another_credential_gets_no_cold_frame(
    world, on_orthanc, no_read_ahead
):
    study = await sync_to_async(imaged_study)(world)
    token, bearer = await _viewer(world, study)
    django = CountingDjango()
    app = FastFrames(django)
    series_path, frame_path = _paths(study)
    assert (await _get(app, f"{series_path}/metadata", bearer))[0] == 200

    # Another credential (an outsider's session, a forged token) has no grant: Django refuses.
    status, _headers, _body = await _get(app, frame_path, (b"authorization", b"Bearer forged"))
    assert status == 401
    assert django.requests == 2

    await sync_to_async(viewer_token_revoke)(token=token, by=Actor(user=world.gp.user))
    status, headers, _body = await _get(app, frame_path, bearer)
    assert status == 401
    assert b"content-security-policy" in headers  # Django's refusal
    assert django.requests == 3
    key = frame_key(study["study_uid"], study["series_uid"], study["sop_uid"], 1, EXPLICIT_LE)
    assert caches["frames"].get(key) is None  # nothing fetched for a refused caller


async def test_an_instance_without_membership_mark_goes_to_django(world, on_orthanc, no_read_ahead):
    """The series search grants but places no instance: the archive's index must say where
    an instance is before the fast path answers it."""
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    app = FastFrames(django)
    _series_path, frame_path = _paths(study)
    status, _headers, _body = await _get(
        app, f"/dicomweb/studies/{study['study_uid']}/series", bearer
    )
    assert status == 200
    assert (
        caches["frames"].get(member_key(study["study_uid"], study["series_uid"], study["sop_uid"]))
        is None
    )

    status, headers, _body = await _get(app, frame_path, bearer)
    assert status == 200
    assert django.requests == 2
    assert b"content-security-policy" in headers  # checked by Django, which placed it


async def test_opening_a_study_reads_its_series_ahead(world, on_orthanc):
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    app = FastFrames(django)
    instances = await sync_to_async(get_archive().search_instances)(
        study["study_uid"], study["series_uid"]
    )
    sops = [item["00080018"]["Value"][0] for item in instances]
    assert len(sops) == 2

    status, _headers, _body = await _get(
        app, f"/dicomweb/studies/{study['study_uid']}/series", bearer
    )
    assert status == 200
    keys = [frame_key(study["study_uid"], study["series_uid"], sop, 1, EXPLICIT_LE) for sop in sops]
    # The read-ahead runs on this event loop: the wait must leave it running.
    await async_wait_until(
        lambda: len(caches["frames"].get_many(keys)) == len(keys),
        timeout=20,
        what="the series to be read ahead",
    )

    # Every frame of the series is then answered before Django.
    for sop in sops:
        path = (
            f"/dicomweb/studies/{study['study_uid']}/series/{study['series_uid']}"
            f"/instances/{sop}/frames/1"
        )
        status, headers, body = await _get(app, path, bearer)
        assert status == 200
        assert b"content-security-policy" not in headers
        assert len(_frame(body)) == 32 * 32 * 2
    assert django.requests == 1


async def test_the_read_ahead_falls_back_when_no_fast_path_runs(world, on_orthanc):
    """Without a fast path on a loop (a WSGI process, a Celery worker), the read-ahead is
    left to the Celery task: nothing is scheduled on a loop that is gone."""
    app = FastFrames(CountingDjango())
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    assert (await _get(app, _paths(study)[0] + "/metadata", bearer))[0] == 200
    assert fast_frames.schedule_read_ahead(study["study_uid"], [study["series_uid"]])
    app.loop = None
    assert not fast_frames.schedule_read_ahead(study["study_uid"], [study["series_uid"]])


async def test_a_kept_alive_connection_closed_by_the_archive_is_retried_once():
    """Orthanc closes idle kept-alive connections: the next request sent on one fails
    unanswered, and goes again on a fresh connection instead of reporting the archive down."""
    answered, dropped = [], []

    async def archive(reader, writer):
        # Each connection answers one request, then drops the next one unanswered.
        await reader.readuntil(b"\r\n\r\n")
        answered.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        dropped.append(1)
        writer.close()

    server = await asyncio.start_server(archive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AsyncArchive(f"http://127.0.0.1:{port}/dicom-web", timeout=5)
        assert (await client.get("/studies", "application/dicom+json")).body == b"ok"
        second = await client.get("/studies", "application/dicom+json")
        assert second is not None and second.body == b"ok"
        assert (len(answered), len(dropped)) == (2, 1)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_archive_that_is_down_leaves_the_frame_to_django():
    client = AsyncArchive("http://127.0.0.1:9/dicom-web", timeout=2)  # discard: nobody
    assert await client.frames("1.2", "1.2.3", "1.2.3.4", [1]) is None


async def test_a_frame_being_read_ahead_is_fetched_once(world, on_orthanc, monkeypatch):
    """The viewer asks for the instance the read-ahead is fetching: it waits for that answer
    instead of asking the archive a second time."""
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    app = FastFrames(django)
    series_path, frame_path = _paths(study)
    asked, released, waiting = [], asyncio.Event(), asyncio.Event()
    archive_frames, wait_for_read_ahead = AsyncArchive.frames, FastFrames._being_read_ahead

    async def held_frames(self, study_uid, series_uid, sop_uid, numbers):
        asked.append(sop_uid)
        await released.wait()
        return await archive_frames(self, study_uid, series_uid, sop_uid, numbers)

    async def watched(self, *args):
        waiting.set()
        return await wait_for_read_ahead(self, *args)

    monkeypatch.setattr(AsyncArchive, "frames", held_frames)
    monkeypatch.setattr(FastFrames, "_being_read_ahead", watched)

    assert (await _get(app, f"{series_path}/metadata", bearer))[0] == 200
    await async_wait_until(
        lambda: (study["study_uid"], study["series_uid"], study["sop_uid"]) in app.fetching,
        timeout=20,
        what="the read-ahead to start",
    )
    viewer = asyncio.ensure_future(_get(app, frame_path, bearer))
    await asyncio.wait_for(waiting.wait(), 10)
    released.set()
    status, headers, body = await asyncio.wait_for(viewer, 20)
    assert status == 200
    assert b"content-security-policy" not in headers
    assert len(_frame(body)) == 32 * 32 * 2
    assert asked.count(study["sop_uid"]) == 1
    assert django.requests == 1
