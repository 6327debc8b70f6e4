"""Access helpers of the imaging objects: outsiders get 404, refusals are audited."""

from django.http import Http404

from imaging.models import (
    IngestBatch,
    ReviewRoom,
    Statement,
    Study,
    StudyPackage,
    StudyReport,
)
from imaging.permissions import statement_establishments
from imaging.selectors import read_only_study, studies_visible_to
from portal.access import get_patient_for_user, not_found, patient_of, record_refusal
from portal.audit import Actor
from portal.models import AuditPurpose


def get_study_for_user(request, study_id, *, read_only: bool = False):
    """The study ``study_id`` if ``request.user`` may see it, else 404.

    ``read_only=True`` (the viewer) also lets in a read-only grant (the priors of a patient
    whose tele-expertise request the user claimed); ``study.access_purpose`` says what the
    page audits and ``study.access_read_only`` whether it may only be looked at."""
    study = (
        studies_visible_to(request.user, include_read_only=False)
        .filter(pk=study_id)
        .select_related("patient")
        .first()
    )
    purpose, only_reading = AuditPurpose.CARE, False
    if study is None and read_only:
        study, purpose = read_only_study(request.user, study_id)
        only_reading = True
    if study is not None:
        study.access_purpose, study.access_read_only = purpose, only_reading
    if study is None:
        raise not_found(
            request,
            object_type="imaging.study",
            object_id=study_id,
            patient=patient_of(Study.objects.filter(pk=study_id)),
        )
    return study


def get_ingest_batch_for_user(request, patient_id, batch_id) -> IngestBatch:
    """An import of this patient made by ``request.user``; anybody else gets 404."""
    patient = get_patient_for_user(request, patient_id)
    batch = IngestBatch.objects.filter(
        pk=batch_id, patient=patient, uploaded_by=request.user
    ).first()
    if batch is None:
        raise not_found(
            request,
            object_type="imaging.ingestbatch",
            object_id=batch_id,
            patient=patient,
        )
    return batch


def get_study_report_for_user(request, patient_id, report_id) -> StudyReport:
    """A report of one of the patient's studies (read: a read-only grant is enough)."""
    patient = get_patient_for_user(request, patient_id, read_only=True)
    report = (
        StudyReport.objects.filter(pk=report_id, study__patient=patient)
        .filter(study__in=studies_visible_to(request.user))
        .select_related("study")
        .first()
    )
    if report is None:
        raise not_found(
            request,
            object_type="imaging.studyreport",
            object_id=report_id,
            patient=patient,
        )
    report.access_purpose = patient.access_purpose
    return report


def get_viewer_token_for_user(request, token_id):
    """One of ``request.user``'s own viewer tokens, else 404."""
    from imaging.models import ViewerToken

    token = (
        ViewerToken.objects.filter(pk=token_id, user=request.user)
        .select_related("study", "patient")
        .first()
    )
    if token is None:
        raise not_found(
            request,
            object_type="imaging.viewertoken",
            object_id=token_id,
            # A token opens one study or one patient's studies.
            patient=patient_of(
                ViewerToken.objects.filter(pk=token_id), "patient", "study__patient"
            ),
        )
    return token


def get_review_room_for(actor: Actor, room_id) -> ReviewRoom:
    """The open review room ``room_id`` if ``actor`` may join it, else 404 (pages and sockets)."""
    from imaging.review import review_room_entitled

    room = review_room_entitled(user=actor.user, room_id=room_id)
    if room is None:
        record_refusal(
            actor=actor,
            object_type="imaging.reviewroom",
            object_id=room_id,
            patient=patient_of(ReviewRoom.objects.filter(pk=room_id)),
        )
        raise Http404
    return room


def get_package_for_user(request, patient_id, package_id):
    """A DICOMDIR package of this patient asked for by ``request.user``, who may still open
    the patient for care; anybody else gets 404."""
    patient = get_patient_for_user(request, patient_id)
    package = StudyPackage.objects.filter(
        pk=package_id, patient=patient, requested_by=request.user
    ).first()
    if package is None:
        raise not_found(
            request,
            object_type="imaging.studypackage",
            object_id=package_id,
            patient=patient,
        )
    package.patient = patient  # the one opened above: no second query
    return package


def get_share_for_user(request, share_id):
    """A share of a patient ``request.user`` may open, or any share for the data protection
    officer (who revokes without being in care); else 404. Who may revoke it is the service's
    question (imaging.permissions.may_revoke_share)."""
    from imaging.models import Share
    from portal.access import may_open_patient
    from portal.selectors import AUDITOR_PERMISSION

    share = Share.objects.filter(pk=share_id).select_related("patient", "author").first()
    if share is not None and (
        request.user.has_perm(AUDITOR_PERMISSION)
        or may_open_patient(request.user, share.patient_id)
    ):
        return share
    raise not_found(
        request,
        object_type="imaging.share",
        object_id=share_id,
        patient=patient_of(Share.objects.filter(pk=share_id)),
    )


def get_statement_for_user(request, statement_id):
    """A usage statement of an establishment ``request.user`` may read statements of, else
    the audited 404 (an establishment's administrator learns nothing of another's)."""
    statement = (
        Statement.objects.filter(
            pk=statement_id, establishment__in=statement_establishments(request.user)
        )
        .select_related("establishment")
        .first()
    )
    if statement is None:
        raise not_found(
            request,
            object_type="imaging.statement",
            object_id=statement_id,
            purpose=AuditPurpose.ADMINISTRATION,
        )
    return statement
