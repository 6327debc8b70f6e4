"""The prefetch of priors: when the CHRU de Tours admits Jeanne Dupont (world.patient), the
regional gateway sends her studies made elsewhere (the CH de Bourges) to the CHRU's PACS.

The CHRU's PACS is a real Orthanc with a DICOM listener (tests/orthanc.py, ``orthanc_pacs``);
the studies are in the embedded regional archive, put there by the gateway's own ingest
(imaging.services.ingest_from_establishment), as if each establishment had sent them.
Celery runs in the test process: a sending is over when the on-commit callbacks have run.
"""

import datetime as dt
import shutil
import socket

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from imaging import prefetch
from imaging.dicom_send import DestinationUnreachable
from imaging.models import (
    DicomDeclaration,
    PrefetchItem,
    PrefetchRequest,
    Study,
    StudyIdentity,
)
from imaging.services import ingest_from_establishment
from imaging.tasks import PREFETCH_MAX_RETRIES
from imaging.validation import UploadedFile
from portal.audit import Actor
from portal.events import patient_admitted
from portal.hl7 import handle_message
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    Patient,
    PatientIdentifier,
)
from tests.conftest import client_for, require_service
from tests.dicom_factory import ct_files, pdf_report_file, uid
from tests.test_hl7_listener import TOURS, adt

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]

RECENT = dt.datetime.now(tz=dt.UTC).date() - dt.timedelta(days=200)


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


@pytest.fixture
def retries_run_inline():
    """Celery's retries run at once in the test process, as a worker would run them later:
    the session's tasks propagate their exceptions, which would stop at the first retry."""
    from portal.celery import app

    saved = app.conf.task_eager_propagates
    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = saved


@pytest.fixture
def pacs(orthanc_pacs):
    """The CHRU's PACS, emptied before the test."""
    require_service("dcmtk", None if shutil.which("storescu") else "storescu not found")
    orthanc_pacs.reset()
    return orthanc_pacs


def _send(establishment, files):
    results = ingest_from_establishment(
        uploads=[UploadedFile(f"{n}.dcm", data) for n, data in enumerate(files)],
        establishment=establishment,
        by=Actor.system("tests"),
    )
    assert {result.status for result in results} == {"accepted"}, [r.reason for r in results]
    return Study.objects.get(study_instance_uid=results[0].study.study_instance_uid)


@pytest.fixture
def priors(world):
    """Jeanne Dupont's CT made at Bourges (her Bourges IPP B300001) and her CT made at Tours."""
    world.bourges.patient_id_issuer = "CH-BOURGES"
    world.bourges.save(update_fields=["patient_id_issuer"])
    PatientIdentifier.objects.create(
        patient=world.patient, establishment=world.bourges, value="B300001"
    )
    world.bourges_ct = _send(
        world.bourges,
        ct_files(
            world.patient,
            key="prefetch-bourges",
            slices=3,
            ipp="B300001",
            issuer="CH-BOURGES",
            study_date=RECENT,
            InstitutionName="CH de Bourges",
        )
        # Its report goes with it (the dossier counts images only: 3).
        + [
            pdf_report_file(
                world.patient, key="prefetch-bourges", ipp="B300001", issuer="CH-BOURGES"
            )
        ],
    )
    world.tours_ct = _send(
        world.tours, ct_files(world.patient, key="prefetch-tours", slices=2, study_date=RECENT)
    )
    assert world.bourges_ct.establishment == world.bourges
    assert world.tours_ct.establishment == world.tours
    return world


def _declare_pacs(world, *, port, ae_title="ORTHANC_PACS", **prefetch_settings):
    return DicomDeclaration.objects.create(
        establishment=world.tours,
        pacs_ae_title=ae_title,
        pacs_host="127.0.0.1",
        pacs_port=port,
        **prefetch_settings,
    )


def _admit(world, capture, trigger="A01"):
    with capture(execute=True):
        patient_admitted.send(
            sender=Patient, patient=world.patient, establishment=world.tours, trigger=trigger
        )


def _free_port() -> int:
    """A loopback port nobody listens on: the PACS is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dossier(user, patient):
    response = client_for(user).get(reverse("imaging-dossier", args=[patient.pk]))
    assert response.status_code == 200
    return response.content.decode()


# --- On admission ---------------------------------------------------------------------------


def test_an_admission_sends_the_bourges_prior_to_the_tours_pacs_and_not_its_own_study(
    priors, pacs, capture
):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)

    _admit(world, capture)

    assert pacs.study_uids() == {world.bourges_ct.study_instance_uid}
    assert pacs.instance_count() == 4  # the CT and its PDF report
    request = PrefetchRequest.objects.get()
    assert (request.state, request.trigger, request.patient) == ("sent", "A01", world.patient)
    assert (request.instances_sent, request.instances_total, request.attempts) == (4, 4, 1)
    assert request.finished_at is not None and request.error == ""
    assert list(request.items.values_list("study", "sent")) == [(world.bourges_ct.pk, True)]
    # Audited against the patient: the regional archive, as source, transferred 3 instances
    # to the CHRU's PACS.
    transfer = AuditEvent.objects.get(
        event_id=AuditEventId.INSTANCES_TRANSFERRED, patient=world.patient
    )
    assert (transfer.action, transfer.outcome) == (AuditAction.READ, AuditOutcome.SUCCESS)
    assert transfer.detail["destination_ae_title"] == pacs.ae_title
    assert transfer.detail["finess"] == world.tours.finess
    assert transfer.detail["studies"] == [world.bourges_ct.study_instance_uid]
    assert transfer.detail["instances_sent"] == 4
    # The oncologist of the CHRU reads it in the dossier.
    page = _dossier(world.oncologist.user, world.patient)
    assert 'data-state="sent" data-will-retry="false" data-sent="4"' in page


def test_a_study_already_in_the_pacs_is_not_sent_again(priors, pacs, capture):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)
    _admit(world, capture, trigger="A05")
    assert pacs.instance_count() == 4
    pacs.reset()

    _admit(world, capture, trigger="A01")

    assert pacs.instance_count() == 0
    assert PrefetchRequest.objects.count() == 1  # nothing left to send: no second request


def test_an_opposed_patients_priors_from_other_establishments_never_leave(priors, pacs, capture):
    world = priors
    world.patient.sharing_opposed = True
    world.patient.save(update_fields=["sharing_opposed"])
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)

    _admit(world, capture)

    assert pacs.instance_count() == 0
    assert not PrefetchRequest.objects.exists()
    assert not AuditEvent.objects.filter(event_id=AuditEventId.INSTANCES_TRANSFERRED).exists()


def test_the_opposition_made_after_queuing_still_stops_the_sending(priors, pacs, capture):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)
    with capture(execute=False) as callbacks:
        request = prefetch.prefetch_on_admission(
            patient=world.patient, establishment=world.tours, trigger="A01"
        )
    assert request is not None
    Patient.objects.filter(pk=world.patient.pk).update(sharing_opposed=True)

    for callback in callbacks:
        callback()

    assert pacs.instance_count() == 0
    request.refresh_from_db()
    assert request.state == "sent" and request.instances_sent == 0
    assert not PrefetchItem.objects.filter(request=request).exists()
    assert not AuditEvent.objects.filter(event_id=AuditEventId.INSTANCES_TRANSFERRED).exists()


def test_an_establishment_without_pacs_or_that_declines_gets_nothing(priors, pacs, capture):
    world = priors
    _admit(world, capture)  # no declaration at all
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title, prefetch_enabled=False)
    _admit(world, capture)
    _admit(world, capture, trigger="A08")  # not an admission

    assert not PrefetchRequest.objects.exists()
    assert pacs.instance_count() == 0


def test_a_pacs_that_does_not_answer_is_retried_then_given_up_with_its_reason(
    priors, capture, retries_run_inline
):
    world = priors
    _declare_pacs(world, port=_free_port(), ae_title="TOURS_DOWN")

    _admit(world, capture)

    request = PrefetchRequest.objects.get()
    assert request.state == "failed" and not request.will_retry
    assert request.attempts == PREFETCH_MAX_RETRIES + 1
    assert "TOURS_DOWN" in request.error and request.finished_at is not None
    assert list(request.items.values_list("sent", flat=True)) == [False]
    # Every attempt is in the audit trail, as a failed transfer.
    attempts = AuditEvent.objects.filter(
        event_id=AuditEventId.INSTANCES_TRANSFERRED, patient=world.patient
    )
    assert attempts.count() == PREFETCH_MAX_RETRIES + 1
    assert {event.outcome for event in attempts} == {AuditOutcome.SERIOUS_FAILURE}
    page = _dossier(world.oncologist.user, world.patient)
    assert 'data-state="failed" data-will-retry="false"' in page
    assert "TOURS_DOWN" in page
    # The study is not counted as sent: once the PACS is back, a new admission sends it.


def test_a_failed_attempt_reads_will_retry_and_a_second_worker_cannot_take_it_twice(
    priors, capture
):
    world = priors
    _declare_pacs(world, port=_free_port(), ae_title="TOURS_DOWN")
    with capture(execute=False):
        request = prefetch.prefetch_on_admission(
            patient=world.patient, establishment=world.tours, trigger="A04"
        )

    with pytest.raises(DestinationUnreachable):
        prefetch.prefetch_send(request_id=request.pk, final_attempt=False)

    request.refresh_from_db()
    assert (request.state, request.will_retry, request.attempts) == ("failed", True, 1)
    # While it was queued the dossier polled its state; failed, it stops polling.
    status_url = reverse("imaging-prefetch-status", args=[world.patient.pk])
    state = client_for(world.oncologist.user).get(status_url)
    assert state.status_code == 200 and "no-store" in state["Cache-Control"]
    assert 'data-state="failed" data-will-retry="true"' in state.content.decode()
    assert "hx-get" not in state.content.decode()
    assert client_for(world.outsider.user).get(status_url).status_code == 404
    page = _dossier(world.oncologist.user, world.patient)
    assert 'data-state="failed" data-will-retry="true"' in page
    # Taken by one worker (sending), it cannot be taken by another.
    PrefetchRequest.objects.filter(pk=request.pk).update(state="sending")
    assert prefetch.prefetch_send(request_id=request.pk, final_attempt=True) is None
    request.refresh_from_db()
    assert (request.state, request.attempts) == ("sending", 1)


def test_a_real_a01_from_the_chru_sends_the_priors(priors, pacs, capture):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)
    ins = world.patient.ins_matricule

    with capture(execute=True):
        result = handle_message(
            adt(
                event="A01",
                facility=TOURS,
                control="PREFETCH1",
                ipp="T100001^^^CHRU-TOURS&1.2.250.1.211.10.200.2&ISO^PI",
                ins=ins,
                names="DUPONT^Jeanne^Jeanne Marie^^^^L",
                birth_date="19560312",
                birth_place="37261",
            )
        )

    assert "|AA|" in result.ack, result.ack
    assert pacs.study_uids() == {world.bourges_ct.study_instance_uid}
    assert PrefetchRequest.objects.get().trigger == "A01"


# --- On demand, from the dossier ------------------------------------------------------------


def test_a_member_of_the_care_team_sends_the_priors_from_the_dossier(priors, pacs, capture):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)
    url = reverse("imaging-prefetch", args=[world.patient.pk])
    page = _dossier(world.oncologist.user, world.patient)
    assert url in page

    # The radiologist of Bourges does not care for her: 404, nothing sent.
    assert client_for(world.outsider.user).post(url).status_code == 404
    assert not PrefetchRequest.objects.exists()

    with capture(execute=True):
        response = client_for(world.oncologist.user).post(
            url, {"establishment": world.tours.pk, "study": world.tours_ct.pk}
        )
    assert response.status_code == 302
    assert response["Location"] == reverse("imaging-dossier", args=[world.patient.pk])
    assert pacs.study_uids() == {world.bourges_ct.study_instance_uid}
    request = PrefetchRequest.objects.get()
    assert (request.trigger, request.requested_by) == ("on_demand", world.oncologist.user)
    assert 'data-state="sent"' in _dossier(world.oncologist.user, world.patient)
    asked = AuditEvent.objects.get(
        event_id=AuditEventId.PATIENT_RECORD,
        action=AuditAction.EXECUTE,
        object_type="imaging.prefetchrequest",
    )
    assert (asked.patient, asked.actor) == (world.patient, world.oncologist.user)
    assert asked.detail["studies"] == [world.bourges_ct.study_instance_uid]
    transfer = AuditEvent.objects.get(event_id=AuditEventId.INSTANCES_TRANSFERRED)
    assert transfer.actor == world.oncologist.user

    # Asked again: nothing left to send, no second request, the PACS receives nothing more.
    pacs.reset()
    with capture(execute=True):
        client_for(world.oncologist.user).post(url)
    assert PrefetchRequest.objects.count() == 1 and pacs.instance_count() == 0


def test_the_gp_whose_practice_has_no_pacs_is_offered_nothing_and_sends_nothing(priors, capture):
    world = priors
    url = reverse("imaging-prefetch", args=[world.patient.pk])
    assert url not in _dossier(world.gp.user, world.patient)
    with capture(execute=True):
        response = client_for(world.gp.user).post(url)
    assert response.status_code == 302
    assert not PrefetchRequest.objects.exists()


def test_another_establishments_pacs_cannot_be_chosen(priors, pacs, capture):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)
    DicomDeclaration.objects.create(
        establishment=world.bourges, pacs_ae_title="BOURGES", pacs_host="127.0.0.1", pacs_port=1
    )
    with capture(execute=True):
        client_for(world.oncologist.user).post(
            reverse("imaging-prefetch", args=[world.patient.pk]),
            {"establishment": world.bourges.pk},
        )
    assert not PrefetchRequest.objects.exists()
    with pytest.raises(prefetch.NotEntitled):
        prefetch.prefetch_on_demand(
            patient=world.patient,
            establishment=world.bourges,
            by=Actor(user=world.oncologist.user),
        )


# --- The selection --------------------------------------------------------------------------


def _study(world, key, *, establishment, date, modalities="CT", body_part="CHEST"):
    return Study.objects.create(
        study_instance_uid=uid("selection", key),
        patient=world.patient,
        establishment=establishment,
        identity=StudyIdentity.MATCHED,
        study_date=date,
        modalities=modalities,
        body_part=body_part,
        instance_count=1,
    )


@override_settings(PREFETCH_YEARS=5, PREFETCH_MAX_STUDIES=3)
def test_the_selection_takes_recent_priors_from_elsewhere_like_the_current_study_first(world):
    today = dt.datetime.now(tz=dt.UTC).date()
    days = dt.timedelta(days=1)
    declaration = DicomDeclaration(establishment=world.tours, pacs_ae_title="P")
    own = _study(world, "own", establishment=world.tours, date=today)
    old = _study(world, "old", establishment=world.bourges, date=today - 6 * 365 * days)
    mr_recent = _study(
        world, "mr", establishment=world.bourges, date=today, modalities="MR", body_part="HEAD"
    )
    ct_older = _study(world, "ct1", establishment=world.bourges, date=today - 400 * days)
    ct_newer = _study(world, "ct2", establishment=world.practice, date=today - 30 * days)
    cd = _study(
        world, "cd", establishment=None, date=today - 10 * days, modalities="US", body_part=""
    )
    review = _study(world, "review", establishment=world.bourges, date=today)
    Study.objects.filter(pk=review.pk).update(identity=StudyIdentity.REVIEW)

    def selected(**kwargs):
        return prefetch.priors_to_prefetch(
            patient=world.patient, establishment=world.tours, declaration=declaration, **kwargs
        )

    # No context: the most recent first, at most 3; never the CHRU's own, an old one, or a
    # study whose identity is under review.
    assert selected() == [mr_recent, cd, ct_newer]
    # Looking at a CT of the chest: the CTs first.
    assert selected(context_study=own) == [ct_newer, ct_older, mr_recent]
    # The establishment's own preferences: MR first, 10 years, 10 studies.
    declaration.prefetch_modalities_first = "mr"
    declaration.prefetch_years = 10
    declaration.prefetch_max_studies = 10
    assert selected() == [mr_recent, cd, ct_newer, ct_older, old]
    assert own not in selected() and review not in selected()


def test_a_request_whose_task_was_lost_does_not_hold_its_studies_forever(priors, pacs, capture):
    world = priors
    _declare_pacs(world, port=pacs.dicom_port, ae_title=pacs.ae_title)
    with capture(execute=False):  # the task never runs: a worker killed, a broker emptied
        lost = prefetch.prefetch_on_admission(
            patient=world.patient, establishment=world.tours, trigger="A01"
        )
    # Queued: the dossier polls its state.
    page = _dossier(world.oncologist.user, world.patient)
    assert 'data-state="queued"' in page
    assert reverse("imaging-prefetch-status", args=[world.patient.pk]) in page
    _admit(world, capture)  # at once: the lost request still holds the study
    assert PrefetchRequest.objects.count() == 1 and pacs.instance_count() == 0

    PrefetchRequest.objects.filter(pk=lost.pk).update(
        updated_at=timezone.now() - prefetch.STALE_AFTER - dt.timedelta(minutes=1)
    )
    _admit(world, capture)

    assert pacs.study_uids() == {world.bourges_ct.study_instance_uid}
    assert PrefetchRequest.objects.latest("pk").state == "sent"


def test_the_dossier_reads_the_sendings_in_a_constant_number_of_queries(priors, capture):
    world = priors
    _declare_pacs(world, port=_free_port(), ae_title="TOURS_DOWN")
    client = client_for(world.oncologist.user)
    url = reverse("imaging-dossier", args=[world.patient.pk])

    def queries() -> int:
        client.get(url)  # the first visit asks the archive for the patient's studies
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    with capture(execute=False):
        prefetch.prefetch_on_admission(
            patient=world.patient, establishment=world.tours, trigger="A01"
        )
    one = queries()
    for trigger in ("A04", "A05"):
        PrefetchItem.objects.all().delete()  # lets the same study be queued again
        with capture(execute=False):
            prefetch.prefetch_on_admission(
                patient=world.patient, establishment=world.tours, trigger=trigger
            )
    assert PrefetchRequest.objects.count() == 3
    assert queries() == one
