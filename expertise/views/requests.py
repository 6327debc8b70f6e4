"""A tele-expertise request: written, attached to, sent, claimed or declined, discussed,
closed or cancelled, and its live review; every view through
expertise.access.get_request_for_user."""

from django.contrib import messages
from django.db.models import Prefetch
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from expertise import permissions as may
from expertise import selectors, services
from expertise.access import get_request_for_user
from expertise.forms import (
    AttachmentForm,
    CloseForm,
    DeclineForm,
    MessageForm,
    QuestionForm,
    ReasonForm,
    ReportForm,
    RequestEditForm,
    RequestForm,
    ReviewForm,
)
from expertise.models import Message, Report, Request
from expertise.views.common import act, audit_read, to_request, with_form
from imaging.models import ReviewRoom
from imaging.selectors import (
    establishments_of,
    shared_with_establishments,
    studies_visible_to,
)
from portal.access import get_patient_for_user, may_open_patient
from portal.audit import Actor
from portal.documents_views import uploaded_file_view
from portal.models import AuditPurpose
from portal.services import notifications_mark_read_for_url
from portal.views import patient_data_view

State = Request.State


def _patient_studies(request, patient):
    return (
        studies_visible_to(request.user)
        .filter(patient=patient)
        .order_by("-study_date", "-study_time", "-pk")
    )


def _request_fields(data: dict) -> dict:
    return {
        key: data[key]
        for key in (
            "urgency",
            "question",
            "clinical_context",
            "patient_informed",
            "consent_date",
            "consent_method",
        )
    }


@patient_data_view
def request_create(request, patient_id):
    patient = get_patient_for_user(request, patient_id, purpose=AuditPurpose.EXPERTISE)
    studies = _patient_studies(request, patient)
    # ?pool= (a pool's link, or the page reloaded after choosing one) narrows the named
    # experts to that pool's.
    form = RequestForm(
        request.POST or None, initial={"pool": request.GET.get("pool")}, studies=studies
    )
    attachment_form = AttachmentForm(
        request.POST or None, request.FILES or None, prefix="file", optional=True
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        upload = request.FILES.get("file-file")
        if upload is not None and not attachment_form.is_valid():
            messages.error(request, _("The file was not attached: check its fields."))
        else:
            try:
                created = services.request_create(
                    patient=patient,
                    pool=data["pool"],
                    expert=data["expert"],
                    studies=list(data["studies"]),
                    by=Actor.from_request(request),
                    **_request_fields(data),
                )
            except services.ExpertiseError as error:
                messages.error(request, str(error))
            else:
                if upload is not None:
                    try:
                        services.attachment_add(
                            request=created,
                            by=Actor.from_request(request),
                            kind=attachment_form.cleaned_data["kind"],
                            title=attachment_form.cleaned_data["title"],
                            upload=upload,
                        )
                    except services.ExpertiseError as error:
                        messages.error(request, str(error))
                messages.success(request, _("Draft saved. Check it, then send it."))
                return to_request(created)
    elif request.method == "POST":
        messages.error(request, _("The request was not saved: check the highlighted fields."))
    if request.method == "GET":
        audit_read(request, patient, patient, view="tele-expertise request form")
    return render(
        request,
        "expertise/request_form.html",
        {"patient": patient, "form": form, "attachment_form": attachment_form},
        status=400 if request.method == "POST" else 200,
    )


@patient_data_view
def request_edit(request, request_id):
    found = get_request_for_user(request, request_id)
    if not may.may_edit_draft(request=found, user=request.user):
        messages.error(request, _("Only the requester edits a draft."))
        return to_request(found)
    initial = {
        "pool": found.pool,
        "expert": found.expert,
        "urgency": found.urgency,
        "question": found.question,
        "clinical_context": found.clinical_context,
        "studies": list(found.studies.all()),
        "patient_informed": found.patient_informed,
        "consent_date": found.consent_date,
        "consent_method": found.consent_method,
        "revision": found.revision,
    }
    form = RequestEditForm(
        request.POST or None, initial=initial, studies=_patient_studies(request, found.patient)
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.request_update(
                    request=found,
                    revision=data["revision"],
                    by=Actor.from_request(request),
                    pool=data["pool"],
                    expert=data["expert"],
                    studies=list(data["studies"]),
                    **_request_fields(data),
                )
            except services.StaleEdit as error:
                messages.error(request, str(error))
                status = 409
            except services.ExpertiseError as error:
                messages.error(request, str(error))
                status = 400
            else:
                messages.success(request, _("Draft saved."))
                return to_request(found)
        else:
            messages.error(request, _("The request was not saved: check the highlighted fields."))
            status = 400
    else:
        audit_read(request, found, found.patient, view="tele-expertise request form")
    return render(
        request,
        "expertise/request_form.html",
        {"patient": found.patient, "form": form, "found": found},
        status=status,
    )


def _detail_context(request, found: Request) -> dict:
    user = request.user
    is_requester = may.is_requester(request=found, user=user)
    is_expert = may.is_expert(request=found, user=user)
    report = Report.objects.filter(request=found).first()
    can_write_report = may.may_write_report(request=found, user=user)
    is_coordinator = may.is_pool_coordinator(pool=found.pool, user=user)
    # Not even named when the patient's opposition to sharing hides them from this user.
    studies = list(
        found.studies.filter(shared_with_establishments(establishments_of(user))).order_by(
            "-study_date", "-pk"
        )
    )
    # Links lead only where the access helpers let this user in (a coordinator follows the
    # delays, not the images): the others are shown as plain text.
    viewable = set(
        studies_visible_to(user)
        .filter(pk__in=[study.pk for study in studies])
        .values_list("pk", flat=True)
    )
    for study in studies:
        study.may_view = study.pk in viewable
    room = ReviewRoom.objects.filter(pk=found.review_room_id, closed_at__isnull=True).first()
    from expertise.pdf import report_outputs

    return {
        "found": found,
        "patient": found.patient,
        "is_requester": is_requester,
        "is_expert": is_expert,
        "is_coordinator": is_coordinator,
        "may_claim": may.may_claim(request=found, user=user),
        "may_decline": may.may_decline(request=found, user=user),
        "may_write": may.may_write(request=found, user=user),
        "may_review": may.may_start_review(request=found, user=user) and bool(studies),
        "missing": services.request_missing(found) if found.state == State.DRAFT else [],
        "requirement": services.requirement_label(found.specialty),
        "limit_reached": (is_expert or may.may_claim(request=found, user=user))
        and found.state in (State.SENT, State.ACCEPTED, State.INFO_REQUESTED)
        and services.annual_limit_reached(found, expert=user),
        "studies": studies,
        "may_open_dossier": may_open_patient(user, found.patient_id, read_only=True),
        "attachments": list(
            selectors.request_attachments_for(request=found, user=user).filter(message__isnull=True)
        ),
        "thread": list(
            found.messages.select_related("author__professional").prefetch_related(
                Prefetch("attachments", queryset=selectors.attachments_shown_to(user))
            )
        ),
        "events": list(found.events.select_related("actor__professional")),
        "report": report,
        "report_form": ReportForm(
            instance=report, initial={"revision": report.revision if report else None}
        )
        if can_write_report and not (report and report.is_locked)
        else None,
        "report_missing": services.report_missing(report) if can_write_report else [],
        "room": room,
        "message_form": MessageForm(),
        "attachment_form": AttachmentForm(prefix="file"),
        "decline_form": DeclineForm(),
        "reason_form": ReasonForm(),
        "question_form": QuestionForm(),
        "close_form": CloseForm(),
        "review_form": ReviewForm(studies=found.studies.all()) if studies else None,
        "outputs": report_outputs(request=found, user=user)
        if report and report.is_locked
        else None,
    }


@patient_data_view
@require_GET
def request_detail(request, request_id):
    found = get_request_for_user(request, request_id)
    audit_read(request, found, found.patient, view="tele-expertise request")
    # Opening the request is reading what its notifications announced.
    notifications_mark_read_for_url(user=request.user, url=request.path)
    return render(request, "expertise/request.html", _detail_context(request, found))


@patient_data_view
@require_POST
def attachment_add(request, request_id):
    found = get_request_for_user(request, request_id)
    form = AttachmentForm(request.POST, request.FILES, prefix="file")
    return with_form(
        request,
        found,
        form,
        lambda by, data: services.attachment_add(
            request=found, by=by, kind=data["kind"], title=data["title"], upload=data["file"]
        ),
        success=_("File attached to the draft."),
    )


attachment_download = uploaded_file_view(
    open_parent=get_request_for_user,
    files=lambda found, user: selectors.request_attachments_for(request=found, user=user),
    object_type="expertise.attachment",
    purpose=AuditPurpose.EXPERTISE,
    audit=lambda request, found, attachment: audit_read(
        request, attachment, found.patient, expertise_request=found.pk
    ),
    filename=lambda attachment: attachment.file.name.rsplit("/", 1)[-1],
    as_attachment=lambda attachment: attachment.content_type == "application/pdf",
    file_id="attachment_id",
)


@patient_data_view
@require_POST
def request_send(request, request_id):
    found = get_request_for_user(request, request_id)
    return act(
        request,
        found,
        lambda by: services.request_send(request=found, by=by),
        success=lambda sent: (
            _("Request sent to %(expert)s: you will be told when it is accepted.")
            % {"expert": sent.expert.professional if sent.expert else sent.pool.name}
        ),
    )


@patient_data_view
@require_POST
def request_claim(request, request_id):
    found = get_request_for_user(request, request_id)
    return act(
        request,
        found,
        lambda by: services.request_claim(request=found, by=by),
        success=_(
            "You accepted the request: it is yours to answer. Until you answer, you can read the "
            "patient's imaging dossier, priors included."
        ),
    )


@patient_data_view
@require_POST
def request_decline(request, request_id):
    found = get_request_for_user(request, request_id)
    response = with_form(
        request,
        found,
        DeclineForm(request.POST),
        lambda by, data: services.request_decline(
            request=found, by=by, reason=data["reason"], to=data["to"]
        ),
        success=lambda declined: (
            _("Request declined: it went back to the pool for another expert.")
            if declined.state == State.SENT
            else _("Request declined: it went back to the requester.")
        ),
    )
    # Declined back to the pool, the request may no longer be the expert's to see.
    if selectors.requests_visible_to(request.user).filter(pk=found.pk).exists():
        return response
    messages.info(request, _("The request left your list."))  # after the decline's message
    return redirect("expertise-home")


@patient_data_view
@require_POST
def request_ask(request, request_id):
    found = get_request_for_user(request, request_id)
    return with_form(
        request,
        found,
        QuestionForm(request.POST),
        lambda by, data: services.request_ask_information(
            request=found, by=by, question=data["question"]
        ),
        success=_("Question sent to the requester: the deadline pauses until the answer."),
    )


@patient_data_view
@require_POST
def message_post(request, request_id):
    found = get_request_for_user(request, request_id)
    form = MessageForm(request.POST, request.FILES)
    return with_form(
        request,
        found,
        form,
        lambda by, data: services.message_post(
            request=found,
            by=by,
            body=data["body"],
            upload=data["file"],
            kind=data["kind"] or "document",
        ),
        success=lambda message: (
            _("Information given: the request is back with the expert.")
            if message.kind == Message.Kind.REPLY
            else _("Message sent.")
        ),
    )


@patient_data_view
@require_POST
def request_close(request, request_id):
    found = get_request_for_user(request, request_id)
    return with_form(
        request,
        found,
        CloseForm(request.POST),
        lambda by, data: services.request_close(request=found, by=by, outcome=data["outcome"]),
        success=_("Request closed. Thank you for saying whether it avoided a referral."),
    )


@patient_data_view
@require_POST
def request_cancel(request, request_id):
    found = get_request_for_user(request, request_id)
    return with_form(
        request,
        found,
        ReasonForm(request.POST),
        lambda by, data: services.request_cancel(request=found, by=by, reason=data["reason"]),
        success=_("Request cancelled."),
    )


@patient_data_view
@require_POST
def request_redraft(request, request_id):
    found = get_request_for_user(request, request_id)
    return act(
        request,
        found,
        lambda by: services.request_redraft(request=found, by=by),
        success=_("The request is a draft again: change it, then send it."),
    )


@patient_data_view
@require_POST
def review_start(request, request_id):
    found = get_request_for_user(request, request_id)
    form = ReviewForm(request.POST, studies=found.studies.all())
    if not form.is_valid():
        messages.error(request, _("Choose one of the request's studies."))
        return to_request(found)
    try:
        room = services.review_start(
            request=found, study=form.cleaned_data["study"], by=Actor.from_request(request)
        )
    except services.ExpertiseError as error:
        messages.error(request, str(error))
        return to_request(found)
    messages.success(request, _("Live review open: the other doctor is invited to join."))
    return redirect("review-room", room_id=room.pk)
