"""DICOMweb reads through Django's synchronous handler on kept threads (portal.sync_http):
the same answers, headers and refusals as through Django's ASGI handler."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application

from imaging.services import viewer_token_issue
from portal.audit import Actor
from portal.sync_http import SyncDicomWebReads, wsgi_environ
from tests.permission_matrix import imaged_study
from tests.test_fast_frames import _connections_given_back, _frame, _get  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


class Counting:
    def __init__(self, app):
        self.app, self.requests = app, 0

    async def __call__(self, scope, receive, send):
        self.requests += 1
        await self.app(scope, receive, send)


@pytest.mark.asyncio
async def test_reads_get_the_answers_django_gives_without_its_asgi_handler(world):
    study = await sync_to_async(imaged_study)(world)
    _token, raw = await sync_to_async(viewer_token_issue)(
        by=Actor(user=world.gp.user), study=study["study"]
    )
    bearer = (b"authorization", f"Bearer {raw}".encode())
    asgi = Counting(get_asgi_application())
    app = SyncDicomWebReads(asgi)
    search = "/dicomweb/studies?PatientID=" + study["study"].dicom_patient_id
    frames = (
        f"/dicomweb/studies/{study['study_uid']}/series/{study['series_uid']}"
        f"/instances/{study['sop_uid']}/frames/1"
    )

    status, headers, body = await _get(app, search, bearer)
    assert status == 200
    assert [found["0020000D"]["Value"][0] for found in json.loads(body)] == [study["study_uid"]]
    assert headers[b"cache-control"] == b"no-store"
    assert b"content-security-policy" in headers  # the same middleware
    status, headers, body = await _get(app, frames, bearer)  # a streamed answer
    assert status == 200
    assert len(_frame(body)) == 32 * 32 * 2
    assert asgi.requests == 0

    # Refusals are Django's, unchanged: no credential, another patient's study.
    assert (await _get(app, search))[0] == 401
    other = f"/dicomweb/studies/{study['study_uid']}9/series"
    assert (await _get(app, other, bearer))[0] == 404
    assert asgi.requests == 0

    # Anything but a DICOMweb read is left to Django's ASGI handler.
    assert (await _get(app, "/", bearer))[0] in (200, 302)
    assert asgi.requests == 1


def test_the_wsgi_environment_keeps_paths_queries_and_repeated_headers():
    environ = wsgi_environ(
        {
            "type": "http",
            "method": "GET",
            "path": "/dicomweb/studies/é",
            "root_path": "",
            "query_string": b"PatientName=DUPO*&limit=5",
            "headers": [
                (b"host", b"portal.example"),
                (b"accept", b"application/dicom+json"),
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-for", b"10.0.0.2"),
                (b"content-type", b"text/plain"),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "scheme": "https",
        }
    )
    assert environ["PATH_INFO"].encode("latin-1").decode() == "/dicomweb/studies/é"
    assert environ["QUERY_STRING"] == "PatientName=DUPO*&limit=5"
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["HTTP_HOST"] == "portal.example"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
