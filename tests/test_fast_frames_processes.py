"""Two daphne processes behind one Redis: the one reading a series ahead marks each instance
it is fetching, and the other waits for those frames to land instead of asking the busy
archive a second time, unless the mark's reader is gone (its mark expires) or is too slow."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from imaging import fast_frames
from imaging.fast_frames import FastFrames
from imaging.frames import EXPLICIT_LE
from imaging.grants import fetching_key, frame_key
from tests.permission_matrix import imaged_study
from tests.test_fast_frames import _connections_given_back, _frame, _get, redis_caches  # noqa: F401
from tests.test_fast_frames_cold import CountingDjango, _paths, _viewer, on_orthanc  # noqa: F401
from tests.waiting import async_wait_until

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_orthanc"),
]


def _asking(process: FastFrames, asked: list, hold: asyncio.Event | None = None):
    """The process's archive, recording each instance it is asked for (held until ``hold``)."""
    frames = process.archive.frames

    async def counted(study_uid, series_uid, sop_uid, numbers):
        asked.append(sop_uid)
        if hold is not None:
            await hold.wait()
        return await frames(study_uid, series_uid, sop_uid, numbers)

    process.archive.frames = counted


def _marked(study):
    client = caches["frames"]._cache.get_client(write=False)
    key = caches["frames"].make_key(
        fetching_key(study["study_uid"], study["series_uid"], study["sop_uid"])
    )
    return sync_to_async(lambda: bool(client.exists(key)))


async def _stop(process: FastFrames):
    for task in process.tasks:
        task.cancel()
    await asyncio.gather(*process.tasks, return_exceptions=True)


async def test_the_other_process_waits_for_the_read_ahead_and_the_archive_is_asked_once(
    world, monkeypatch
):
    # A deadline no loaded machine reaches: this test is about the wait, not its limit.
    monkeypatch.setattr(fast_frames, "FETCH_WAIT_SECONDS", 20)
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    reader, other = FastFrames(django), FastFrames(django)
    asked_reader, asked_other, released = [], [], asyncio.Event()
    _asking(reader, asked_reader, hold=released)
    _asking(other, asked_other)
    series_path, frame_path = _paths(study)
    waiting = asyncio.Event()
    elsewhere = other._read_ahead_elsewhere

    async def watched(*args):
        waiting.set()
        return await elsewhere(*args)

    other._read_ahead_elsewhere = watched
    try:
        # The study is opened through the reader process, which starts the read-ahead.
        assert (await _get(reader, f"{series_path}/metadata", bearer))[0] == 200
        await async_wait_until(
            _marked(study), timeout=20, what="the read-ahead to mark the instance"
        )

        viewer = asyncio.ensure_future(_get(other, frame_path, bearer))
        await asyncio.wait_for(waiting.wait(), 10)
        assert not viewer.done()  # waiting for the reader's frames, not asking the archive
        released.set()
        status, headers, body = await asyncio.wait_for(viewer, 20)
    finally:
        released.set()
        await _stop(reader)

    assert status == 200
    assert b"content-security-policy" not in headers  # answered before Django
    stored = caches["frames"].get(
        frame_key(study["study_uid"], study["series_uid"], study["sop_uid"], 1, EXPLICIT_LE)
    )
    assert _frame(body) == stored
    assert asked_reader.count(study["sop_uid"]) == 1
    assert asked_other == []  # the archive was asked once, by the reader
    assert django.requests == 1
    assert not await _marked(study)()  # the reader took its mark off


async def test_a_dead_readers_mark_expires_and_the_other_process_fetches_itself(world, monkeypatch):
    monkeypatch.setattr(fast_frames, "FETCH_MARK_SECONDS", 1)
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    reader, other = FastFrames(django), FastFrames(django)
    asked_reader, asked_other = [], []
    _asking(reader, asked_reader, hold=asyncio.Event())  # never answered: a reader that died
    _asking(other, asked_other)
    series_path, frame_path = _paths(study)
    try:
        assert (await _get(reader, f"{series_path}/metadata", bearer))[0] == 200
        await async_wait_until(
            _marked(study), timeout=20, what="the read-ahead to mark the instance"
        )

        # Its frames never land: after a short wait the other process asks the archive.
        status, headers, body = await _get(other, frame_path, bearer)
        assert status == 200
        assert b"content-security-policy" not in headers
        assert len(_frame(body)) == 32 * 32 * 2
        assert asked_other == [study["sop_uid"]]
        assert django.requests == 1

        # The dead reader never takes its mark off: it expires on its own.
        async def unmarked():
            return not await _marked(study)()

        await async_wait_until(unmarked, timeout=10, what="the dead reader's mark to expire")
        assert not all(task.done() for task in reader.tasks)  # the reader is still stuck
    finally:
        await _stop(reader)


async def test_without_a_mark_a_cold_frame_does_not_wait(world, monkeypatch):
    monkeypatch.setattr(fast_frames, "FETCH_WAIT_SECONDS", 20)
    monkeypatch.setattr(FastFrames, "start_read_ahead", lambda self, study, series: None)
    study = await sync_to_async(imaged_study)(world)
    _token, bearer = await _viewer(world, study)
    django = CountingDjango()
    process = FastFrames(django)
    asked = []
    _asking(process, asked)
    series_path, frame_path = _paths(study)
    assert (await _get(process, f"{series_path}/metadata", bearer))[0] == 200
    started = time.monotonic()
    status, _headers, _body = await _get(process, frame_path, bearer)
    assert status == 200
    assert time.monotonic() - started < 10  # far from the 20 s wait
    assert asked == [study["sop_uid"]]
