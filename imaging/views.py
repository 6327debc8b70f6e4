import base64
import datetime as dt
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from imaging import packages, prefetch, review, selectors, services
from imaging.access import (
    get_ingest_batch_for_user,
    get_review_room_for,
    get_study_for_user,
    get_study_report_for_user,
    get_viewer_token_for_user,
)
from imaging.archive import ArchiveError
from imaging.forms import ReviewRoomForm
from imaging.models import ArchiveSync, IngestBatch, PrefetchRequest, Study, StudyIdentity
from imaging.permissions import may_package_studies, may_share
from portal import audit
from portal.access import get_patient_for_user, read_only_access_reasons
from portal.access import may_open_patient as may_open_patient_record
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.services import notifications_mark_read_for_url
from portal.task_queue import enqueue
from portal.views import patient_data_view

SYNC_EVERY = dt.timedelta(minutes=5)


def _thumbnail_data_uri(path: str) -> str:
    """Thumbnails travel inside the dossier page: one audited request shows them all."""
    if not path or not default_storage.exists(path):
        return ""
    with default_storage.open(path, "rb") as stream:
        return "data:image/png;base64," + base64.b64encode(stream.read()).decode()


def _request_sync_if_stale(patient) -> ArchiveSync:
    sync = ArchiveSync.objects.filter(patient=patient).first()
    now = timezone.now()
    if sync is None or sync.requested_at is None or now - sync.requested_at > SYNC_EVERY:
        sync = services.archive_sync_requested(patient=patient)
        enqueue("imaging.patient_studies_sync", patient.pk)
        sync.refresh_from_db()
    return sync


@patient_data_view
def patient_dossier(request, patient_id):
    # Reading only: the expert who claimed a tele-expertise request reads the priors too
    # (the page then offers no import and no link to share).
    patient = get_patient_for_user(request, patient_id, read_only=True)
    audit.record_view(
        request,
        patient,
        view="imaging dossier",
        purpose=patient.access_purpose,
        read_only=patient.access_read_only,
    )
    sync = _request_sync_if_stale(patient)
    studies = list(selectors.patient_studies(patient=patient, user=request.user))
    for study in studies:
        study.thumbnail_uri = _thumbnail_data_uri(study.thumbnail)
    return render(
        request,
        "imaging/dossier.html",
        {
            "patient": patient,
            "studies": studies,
            "sync": sync,
            "batches": selectors.ingest_batches_of(user=request.user, patient=patient)[:5],
            "max_upload_mb": settings.INGEST_MAX_UPLOAD_BYTES // 1024**2,
            "read_only": patient.access_read_only,
            "may_open_patient": not patient.access_read_only,
            # The "Share" link of each study (imaging.shares): the care team only.
            "may_share": not patient.access_read_only and may_share(request.user, patient),
            # The expert's way back to the request he reads the priors for.
            "access_reasons": read_only_access_reasons(request.user, patient.pk),
            **({} if patient.access_read_only else _prefetch_panel(request.user, patient)),
            # The user's own DICOMDIR packages of this patient (imaging.packages).
            "packages": []
            if patient.access_read_only
            else list(packages.packages_of(user=request.user, patient=patient)[:5]),
        },
    )


def _prefetch_panel(user, patient) -> dict:
    """The "Send priors to my PACS" panel: the user's establishments with a PACS, and the
    latest sendings of this patient's priors to them."""
    establishments = prefetch.pacs_establishments_of(user)
    requests = (
        prefetch.latest_requests(patient=patient, establishments=establishments)
        if establishments
        else []
    )
    return {
        "pacs_establishments": establishments,
        "prefetch_requests": requests,
        "prefetch_in_progress": any(
            item.state in (PrefetchRequest.State.QUEUED, PrefetchRequest.State.SENDING)
            for item in requests
        ),
    }


@login_required
@never_cache
@require_GET
def prefetch_status(request, patient_id):
    """The state of the latest sendings of priors (states and counts, no images nor
    identity), polled by the dossier while one is queued or sending."""
    patient = get_patient_for_user(request, patient_id)
    return render(
        request,
        "imaging/_prefetch_requests.html",
        {"patient": patient, **_prefetch_panel(request.user, patient)},
    )


@patient_data_view
@require_POST
def prefetch_request(request, patient_id):
    """Send the patient's priors from the other establishments to the PACS of one of the
    user's establishments (imaging.prefetch), now rather than at the next admission."""
    patient = get_patient_for_user(request, patient_id)
    establishments = prefetch.pacs_establishments_of(request.user)
    wanted = request.POST.get("establishment", "")
    target = next((item for item in establishments if not wanted or str(item.pk) == wanted), None)
    if target is None:
        messages.error(request, _("None of your establishments has declared a PACS."))
        return redirect("imaging-dossier", patient_id=patient.pk)
    # The study the user is looking at, if any: priors like it go first.
    study_id = request.POST.get("study", "")
    context_study = (
        Study.objects.filter(pk=study_id, patient=patient, identity=StudyIdentity.MATCHED).first()
        if study_id.isdigit()
        else None
    )
    created = prefetch.prefetch_on_demand(
        patient=patient,
        establishment=target,
        by=Actor.from_request(request),
        context_study=context_study,
    )
    if created is None:
        messages.info(
            request,
            _("No prior from another establishment is left to send to the PACS of %(name)s.")
            % {"name": target.name},
        )
    else:
        messages.success(
            request,
            _("The priors are being sent to the PACS of %(name)s.") % {"name": target.name},
        )
    return redirect("imaging-dossier", patient_id=patient.pk)


@patient_data_view
@require_POST
def study_upload(request, patient_id):
    patient = get_patient_for_user(request, patient_id)
    files = request.FILES.getlist("files")
    if not files:
        messages.error(request, _("Choose DICOM files, a folder or a zip archive to import."))
        return redirect("imaging-dossier", patient_id=patient.pk)
    if sum(upload.size for upload in files) > settings.INGEST_MAX_UPLOAD_BYTES:
        messages.error(
            request,
            _("This import is larger than %(limit)d MB: split it.")
            % {"limit": settings.INGEST_MAX_UPLOAD_BYTES // 1024**2},
        )
        return redirect("imaging-dossier", patient_id=patient.pk)
    batch = services.ingest_batch_create(
        patient=patient, files=files, by=Actor.from_request(request)
    )
    return redirect("ingest-batch", patient_id=patient.pk, batch_id=batch.pk)


@patient_data_view
def ingest_batch_detail(request, patient_id, batch_id):
    batch = get_ingest_batch_for_user(request, patient_id, batch_id)
    audit.record_view(request, batch, view="image import results", patient=batch.patient)
    return render(
        request,
        "imaging/batch.html",
        {"batch": batch, "patient": batch.patient, "items": batch.items.select_related("study")},
    )


@login_required
@never_cache
@require_GET
def ingest_batch_progress(request, patient_id, batch_id):
    """Progress only (counts and state, no patient data), polled while the import runs."""
    batch = get_ingest_batch_for_user(request, patient_id, batch_id)
    response = render(request, "imaging/_batch_progress.html", {"batch": batch})
    if batch.is_finished or batch.state == IngestBatch.State.RETRYING:
        response["HX-Refresh"] = "true"  # the full page then shows the per-file results
    return response


@patient_data_view
@require_POST
def ingest_batch_retry(request, patient_id, batch_id):
    batch = get_ingest_batch_for_user(request, patient_id, batch_id)
    if batch.state == IngestBatch.State.RETRYING:
        enqueue("imaging.ingest_batch", batch.pk)
        messages.info(request, _("The import starts again."))
    return redirect("ingest-batch", patient_id=batch.patient_id, batch_id=batch.pk)


@patient_data_view
def study_report_pdf(request, patient_id, report_id):
    report = get_study_report_for_user(request, patient_id, report_id)
    try:
        document = services.study_report_document(report)
    except ArchiveError:
        messages.error(request, _("The regional archive does not answer: try again shortly."))
        return redirect("imaging-dossier", patient_id=report.study.patient_id)
    audit.record_view(
        request,
        report,
        view="study report",
        patient=report.study.patient,
        purpose=report.access_purpose,
    )
    notifications_mark_read_for_url(user=request.user, url=request.path)
    response = HttpResponse(document, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="compte-rendu-{report.pk}.pdf"'
    return response


@patient_data_view
def recent_studies(request):
    studies = list(selectors.recent_studies(user=request.user))
    audit.record_query(
        request, object_type="imaging.study", view="recent studies", results=len(studies)
    )
    return render(request, "imaging/recent.html", {"studies": studies})


@patient_data_view
@require_POST
def viewer_link_create(request, study_id):
    """Issue a viewer token for one study and show it once, with the ways to use it."""
    study = get_study_for_user(request, study_id)
    token, raw = services.viewer_token_issue(by=Actor.from_request(request), study=study)
    base = request.build_absolute_uri(reverse("dicomweb-studies")).removesuffix("/studies")
    weasis = (
        f"weasis://?%24dicom%3Ars+--url+%22{quote(base)}%22+-r+%22studyUID%3D"
        f"{study.study_instance_uid}%22+--query-header+%22Authorization%3ABearer+{raw}%22"
    )
    external = ""
    if settings.EXTERNAL_VIEWER_URL:
        external = settings.EXTERNAL_VIEWER_URL.format(
            dicomweb=quote(base, safe=""), study_uid=study.study_instance_uid, token=raw
        )
    return render(
        request,
        "imaging/viewer_link.html",
        {
            "study": study,
            "patient": study.patient,
            "token": token,
            "raw": raw,
            "base": base,
            "weasis": weasis,
            "external": external,
            # A committee member sees the case's study, not necessarily the patient's dossier.
            "may_open_dossier": may_open_patient_record(
                request.user, study.patient_id, read_only=True
            ),
        },
    )


@login_required
@require_POST
def viewer_link_revoke(request, token_id):
    token = get_viewer_token_for_user(request, token_id)
    services.viewer_token_revoke(token=token, by=Actor.from_request(request))
    messages.success(request, _("The viewer link no longer works."))
    patient_id = token.patient_id or token.study.patient_id
    return redirect("imaging-dossier", patient_id=patient_id)


# --- Viewer and live shared review ---------------------------------------------------------------


@patient_data_view
@require_GET
def study_viewer(request, study_id):
    """The embedded viewer, full page, on one study (and the patient's priors to compare)."""
    study = get_study_for_user(request, study_id, read_only=True)
    audit.record_view(
        request,
        study,
        view="viewer",
        patient=study.patient,
        purpose=study.access_purpose,
        event=audit.AuditEventId.INSTANCES_ACCESSED,
        read_only=study.access_read_only,
    )
    # The breadcrumbs link only where the same access helpers would let the user in.
    may_open_patient = may_open_patient_record(request.user, study.patient_id)
    return render(
        request,
        "imaging/viewer.html",
        {
            "study": study,
            "patient": study.patient,
            "viewer": selectors.viewer_config(study=study, user=request.user),
            "rooms": review.review_rooms_of_study(user=request.user, study=study),
            "room_form": None
            if study.access_read_only
            else ReviewRoomForm(study=study, user=request.user),
            "may_open_patient": may_open_patient,
            "may_share": may_open_patient
            and not study.access_read_only
            and may_share(request.user, study.patient),
            "may_open_dossier": may_open_patient
            or may_open_patient_record(request.user, study.patient_id, read_only=True),
            # The expert's way back to the request he reads the priors for.
            "access_reasons": read_only_access_reasons(request.user, study.patient_id),
            "may_package": not study.access_read_only
            and may_package_studies(user=request.user, patient=study.patient, studies=[study]),
        },
    )


@patient_data_view
@require_POST
def review_room_create(request, study_id):
    study = get_study_for_user(request, study_id)
    form = ReviewRoomForm(request.POST, study=study, user=request.user)
    if not form.is_valid():
        messages.error(request, _("The review room was not opened: check the form."))
        return redirect("study-viewer", study_id=study.pk)
    room = review.review_room_create(
        study=study,
        title=form.cleaned_data["title"],
        members=[professional.user for professional in form.cleaned_data["members"]],
        by=Actor.from_request(request),
    )
    return redirect("review-room", room_id=room.pk)


@patient_data_view
@require_GET
def review_room_list(request):
    rooms = (
        review.review_rooms_visible_to(request.user)
        .select_related("patient", "study", "coordinator__professional")
        .order_by("-created_at")[:50]
    )
    audit.record_query(request, object_type="imaging.reviewroom", query="review rooms")
    return render(request, "imaging/review_rooms.html", {"rooms": rooms})


@patient_data_view
@require_GET
def review_room_detail(request, room_id):
    actor = Actor.from_request(request)
    room = get_review_room_for(actor, room_id)
    audit.record(
        actor=actor,
        event=audit.AuditEventId.INSTANCES_ACCESSED,
        action=audit.AuditAction.READ,
        obj=room,
        patient=room.patient,
        purpose=AuditPurpose.CARE,
        detail={"view": "review room"},
    )
    return render(
        request,
        "imaging/review_room.html",
        {
            "room": room,
            "patient": room.patient,
            "viewer": selectors.viewer_config(study=room.study, user=request.user, room=room),
        },
    )


@patient_data_view
@require_POST
def review_room_close(request, room_id):
    actor = Actor.from_request(request)
    room = get_review_room_for(actor, room_id)
    if room.coordinator_id != request.user.pk:
        messages.error(request, _("Only the coordinator of the room closes it."))
        return redirect("review-room", room_id=room.pk)
    review.review_room_close(room=room, by=actor)
    messages.info(request, _("The review room is closed."))
    return redirect("study-viewer", study_id=room.study_id)
