"""A grant on one study never opens another study's images.

The attack that this file replays: a caller who may open one study (a GP's session, or a
viewer token scoped to that study) puts another patient's instance UID under the path of
the study he was granted, and reads its pixels from the caches that a legitimate viewer had
just warmed. Every image route must refuse it (404, like a missing instance), whether the
caches are cold or warm, and the refusal must be audited against the patient whose instance
was asked for: that patient's access report shows the attempt.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from imaging import services as imaging_services
from imaging.dicomweb_urls import urlpatterns as dicomweb_routes
from imaging.models import Instance, Study
from imaging.services import viewer_token_issue
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId
from tests.conftest import client_for
from tests.dicom_factory import ct_files, uid
from tests.permission_matrix import imaged_study

pytestmark = pytest.mark.django_db

OCTETS = 'multipart/related; type="application/octet-stream"'
DICOM_PARTS = 'multipart/related; type="application/dicom"'

# Every route that names an instance, with what a viewer sends it.
INSTANCE_ROUTES = {
    "dicomweb-frames": {"frame_list": "1", "accept": OCTETS},
    "dicomweb-frames-rendered": {"frame_list": "1", "accept": "image/jpeg"},
    "dicomweb-instance-rendered": {"accept": "image/jpeg"},
    "dicomweb-instance-thumbnail": {"accept": "image/jpeg"},
    "dicomweb-instance-metadata": {"accept": "application/dicom+json"},
    "dicomweb-instance": {"accept": DICOM_PARTS},
}


def victim_study(world) -> dict:
    """A CT of the other patient, imported by her own doctor (the outsider to world.patient)."""
    batch = imaging_services.ingest_batch_create(
        patient=world.other_patient,
        files=[
            SimpleUploadedFile(f"{n}.dcm", data)
            for n, data in enumerate(
                ct_files(world.other_patient, key="victim", slices=2, ipp="B100002", issuer="")
            )
        ],
        by=Actor(user=world.outsider.user),
    )
    imaging_services.ingest_run(batch=batch)
    study = Study.objects.get(study_instance_uid=uid("victim", "study"))
    assert study.patient == world.other_patient
    instance = Instance.objects.filter(series__study=study).order_by("instance_number").first()
    return {
        "study_uid": study.study_instance_uid,
        "series_uid": instance.series.series_instance_uid,
        "sop_uid": instance.sop_instance_uid,
    }


def _url(name, study_uid, series_uid, sop_uid, **extra) -> str:
    kwargs = {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid}
    if "frame_list" in INSTANCE_ROUTES[name]:
        kwargs["frame_list"] = INSTANCE_ROUTES[name]["frame_list"]
    return reverse(name, kwargs=kwargs)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _refusals_against(patient, sop_uid) -> int:
    return AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT,
        patient=patient,
        object_id=sop_uid,
    ).count()


def _attackers(world, granted) -> dict:
    """The GP three ways: his session, his viewer token in the header, and in the query."""
    _token, raw = viewer_token_issue(by=Actor(user=world.gp.user), study=granted["study"])
    return {
        "session": (client_for(world.gp.user), {}, ""),
        "bearer": (Client(), {"HTTP_AUTHORIZATION": f"Bearer {raw}"}, ""),
        "query token": (Client(), {}, f"?quality=90&token={raw}&x=1"),
    }


@pytest.mark.parametrize("name", sorted(INSTANCE_ROUTES))
def test_another_patients_instance_under_a_granted_study_is_refused_cold_and_warm(name, world):
    granted = imaged_study(world)  # world.patient's CT: the GP may open it
    victim = victim_study(world)
    accept = INSTANCE_ROUTES[name]["accept"]
    attackers = _attackers(world, granted)
    forged_paths = {
        "instance under the granted series": _url(
            name, granted["study_uid"], granted["series_uid"], victim["sop_uid"]
        ),
        "instance and its series under the granted study": _url(
            name, granted["study_uid"], victim["series_uid"], victim["sop_uid"]
        ),
    }

    def attack(warmth):
        for who, (client, headers, query) in attackers.items():
            for what, path in forged_paths.items():
                before = _refusals_against(world.other_patient, victim["sop_uid"])
                response = client.get(path + query, HTTP_ACCEPT=accept, **headers)
                assert response.status_code == 404, (warmth, who, what, response.status_code)
                assert victim["sop_uid"].encode() not in _body(response)
                after = _refusals_against(world.other_patient, victim["sop_uid"])
                assert after == before + 1, (warmth, who, what, "refusal not audited")

    attack("cold")

    # The other patient's doctor views her CT: every cache now holds its objects.
    legitimate = client_for(world.outsider.user).get(
        _url(name, victim["study_uid"], victim["series_uid"], victim["sop_uid"]),
        HTTP_ACCEPT=accept,
    )
    assert legitimate.status_code == 200
    _body(legitimate)

    attack("warm")

    # The GP's own images still open, through the same credentials.
    for who, (client, headers, query) in attackers.items():
        own = client.get(
            _url(name, granted["study_uid"], granted["series_uid"], granted["sop_uid"]) + query,
            HTTP_ACCEPT=accept,
            **headers,
        )
        assert own.status_code == 200, who


def test_no_dicomweb_route_answers_an_instance_outside_the_paths_study(world):
    """Over the whole route table: put the other patient's series and instance under a
    granted study wherever a route takes them; nothing of hers comes back."""
    granted = imaged_study(world)
    victim = victim_study(world)
    client = client_for(world.gp.user)
    # Warm every cache with her images first, as her doctor's viewer would.
    outsider = client_for(world.outsider.user)
    for name in INSTANCE_ROUTES:
        _body(
            outsider.get(
                _url(name, victim["study_uid"], victim["series_uid"], victim["sop_uid"]),
                HTTP_ACCEPT=INSTANCE_ROUTES[name]["accept"],
            )
        )
    checked = 0
    for route in dicomweb_routes:
        parameters = set(route.pattern.converters)
        if "study_uid" not in parameters or "series_uid" not in parameters:
            continue
        kwargs = {"study_uid": granted["study_uid"], "series_uid": victim["series_uid"]}
        if "sop_uid" in parameters:
            kwargs["sop_uid"] = victim["sop_uid"]
        if "frame_list" in parameters:
            kwargs["frame_list"] = "1"
        for accept in ("*/*", OCTETS, DICOM_PARTS, "image/jpeg", "application/dicom+json"):
            for series in (victim["series_uid"], granted["series_uid"]):
                kwargs["series_uid"] = series
                response = client.get(reverse(route.name, kwargs=kwargs), HTTP_ACCEPT=accept)
                body = _body(response)
                assert victim["sop_uid"].encode() not in body, route.name
                assert victim["series_uid"].encode() not in body, route.name
                if "sop_uid" in parameters:
                    # 406: nothing acceptable was asked for, decided before any lookup.
                    assert response.status_code in (404, 406), (route.name, accept, series)
                else:
                    assert response.status_code in (200, 204, 404, 406), route.name
                    foreign = series == victim["series_uid"]
                    if (
                        foreign
                        and response.status_code == 200
                        and "json" in response["Content-Type"]
                    ):
                        assert response.json() == [], route.name
                checked += 1
    assert checked >= 9 * 5 * 2


def test_a_stale_fast_grant_on_another_study_does_not_open_it(world):
    """The grant is per study: the GP's viewer token of his patient's CT opens nothing of the
    other patient, even by her own study's path."""
    granted = imaged_study(world)
    victim = victim_study(world)
    _token, raw = viewer_token_issue(by=Actor(user=world.gp.user), study=granted["study"])
    for name, route in INSTANCE_ROUTES.items():
        response = Client().get(
            _url(name, victim["study_uid"], victim["series_uid"], victim["sop_uid"]),
            HTTP_ACCEPT=route["accept"],
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 404, name
