"""Pages of the shares (imaging.shares).

The author's: the share form from a patient's studies, and the revocation. The recipient's,
without an account: the landing page of the link, the one-time code, the shared contents, a
shared study in the viewer, a shared document. An unknown link is a 404; a revoked or expired
share answers 410 with a page saying so and whom to ask, not an error that looks like a bug.
"""

from functools import wraps

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from imaging import packages, selectors, shares
from imaging.access import get_share_for_user
from imaging.archive import ArchiveError
from imaging.models import StudyReport
from imaging.permissions import share_refusal
from imaging.services import study_report_document
from imaging.share_forms import ShareCodeForm, ShareForm, ShareRevokeForm
from portal import audit, directory_accounts
from portal.access import get_patient_for_user, record_refusal
from portal.audit import Actor
from portal.directory_lookup import lookup_from
from portal.views import patient_data_view

# --- The author's side ----------------------------------------------------------------------


@patient_data_view
@require_http_methods(["GET", "POST"])
def share_create(request, patient_id):
    patient = get_patient_for_user(request, patient_id)
    refusal = share_refusal(request.user, patient)
    studies = selectors.studies_visible_to(request.user, include_read_only=False).filter(
        patient=patient
    )
    documents = [] if refusal else shares.shareable_documents(user=request.user, patient=patient)
    initial = {
        "studies": [pk for pk in request.GET.getlist("study") if pk.isdigit()],
        "documents": request.GET.getlist("document"),
        "recipient_name": request.GET.get("name", "")[:200],
        "recipient_rpps": request.GET.get("rpps", "")[:11],
    }
    # The recipient found in the national directory (the lookup's POST of ``national_id``)
    # fills the name and the RPPS; the e-mail is still asked, the directory has none.
    chosen = request.method == "POST" and "national_id" in request.POST
    if chosen:
        try:
            person = directory_accounts.active_person(request.POST["national_id"][:20])
        except directory_accounts.NotInDirectory:
            messages.error(request, _("This professional is not in the national directory."))
        else:
            name = f"{person.first_name.title()} {person.last_name}".strip()
            initial.update(
                recipient_name=f"{person.civility} {name}".strip(), recipient_rpps=person.rpps
            )
    form = ShareForm(
        request.POST if request.method == "POST" and not chosen else None,
        initial=initial,
        studies=studies.order_by("-study_date", "-pk"),
        documents=documents,
    )
    if request.method == "POST" and not chosen and not refusal and form.is_valid():
        data = form.cleaned_data
        try:
            share, _raw = shares.share_create(
                patient=patient,
                studies=list(data["studies"]),
                documents=form.chosen_documents(),
                recipient_name=data["recipient_name"],
                recipient_email=data["recipient_email"],
                recipient_rpps=data["recipient_rpps"],
                note=data["note"],
                days=data["days"],
                allow_download=data["allow_download"],
                by=Actor.from_request(request),
            )
        except shares.ShareError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("Shared with %(name)s: the link was sent to %(email)s.")
                % {"name": share.recipient_name, "email": share.recipient_email},
            )
            return redirect("patient-detail", patient_id=patient.pk)
    if request.method == "GET" or chosen:
        audit.record_view(request, patient, view="share form", purpose=patient.access_purpose)
    return render(
        request,
        "imaging/shares/create.html",
        {
            "patient": patient,
            "form": form,
            "refusal": refusal,
            "lookup": None
            if refusal
            else lookup_from(
                request,
                keep=[
                    (key, value)
                    for key in ("study", "document")
                    for value in request.GET.getlist(key)
                ],
            ),
        },
    )


@patient_data_view
@require_http_methods(["GET", "POST"])
def share_revoke(request, share_id):
    """GET: the confirmation (from the patient page's panel); POST: the revocation."""
    share = get_share_for_user(request, share_id)
    form = ShareRevokeForm(request.POST if request.method == "POST" else None)
    if request.method == "GET":
        audit.record(
            actor=Actor.from_request(request),
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.READ,
            patient=share.patient,
            obj=share,
            detail={"view": "share revoke"},
        )
        return render(request, "imaging/shares/revoke.html", {"share": share, "form": form})
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        if shares.share_revoke(share=share, by=Actor.from_request(request), reason=reason):
            messages.success(request, _("The share is revoked: its link no longer opens."))
        else:
            messages.info(request, _("This share was already revoked."))
    except shares.ShareError as error:
        messages.error(request, str(error))
    return redirect("patient-detail", patient_id=share.patient_id)


# --- The recipient's side -------------------------------------------------------------------


def _ended(request, share):
    """410, with a page saying why and whom to ask (the author)."""
    return render(
        request, "imaging/shares/ended.html", {"share": share, "author": share.author}, status=410
    )


def share_link(*, granted: bool):
    """The share named by the link's token: 404 if unknown, 410 if revoked or expired; with
    ``granted``, the recipient must have entered a code (else back to the landing page)."""

    def decorator(view):
        @wraps(view)
        @never_cache
        def wrapper(request, token, **kwargs):
            share = shares.share_by_link_token(token)
            if share is None:
                raise Http404
            if not share.in_force:
                return _ended(request, share)
            if granted and not shares.session_granted(request, share):
                return redirect("share-landing", token=token)
            return view(request, share, token, **kwargs)

        return wrapper

    return decorator


def _masked(email: str) -> str:
    local, _at, domain = email.partition("@")
    # Three dots whatever the length: the mask does not tell how long the address is.
    return f"{local[:1]}•••@{domain}"


@require_http_methods(["GET", "POST"])
@share_link(granted=False)
def share_landing(request, share, token):
    if shares.session_granted(request, share):
        return redirect("share-contents", token=token)
    if request.method == "POST":
        try:
            shares.share_code_send(share=share, actor=shares.recipient_actor(request, share))
        except shares.ShareError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("A code was sent to %(email)s: it is valid for 10 minutes.")
                % {"email": _masked(share.recipient_email)},
            )
            return redirect("share-code", token=token)
    return render(
        request,
        "imaging/shares/landing.html",
        {
            "share": share,
            "token": token,
            "masked_email": _masked(share.recipient_email),
            "study_count": shares.shared_studies(share).count(),
            "document_count": share.documents.count(),
        },
    )


@require_http_methods(["GET", "POST"])
@share_link(granted=False)
def share_code(request, share, token):
    form = ShareCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        actor = shares.recipient_actor(request, share)
        if shares.share_code_verify(share=share, code=form.cleaned_data["code"], actor=actor):
            shares.grant_session(request, share)
            return redirect("share-contents", token=token)
        if shares.live_code_exists(share):
            form.add_error("code", _("This code is not the right one: check the last e-mail."))
        else:
            form.add_error(
                "code",
                _("This code no longer works (used, expired or tried too often): ask a new one."),
            )
    return render(
        request,
        "imaging/shares/code.html",
        {
            "share": share,
            "token": token,
            "form": form,
            "masked_email": _masked(share.recipient_email),
        },
    )


@require_http_methods(["GET"])
@share_link(granted=True)
def share_contents(request, share, token):
    studies, documents = shares.share_contents(share)
    shares.share_opened(share=share, actor=shares.recipient_actor(request, share), what="contents")
    viewer_token = ""
    if studies:
        # One DICOMweb token per reading session, not one row per visit of the page.
        key = f"share-viewer-token:{share.pk}"
        viewer_token = shares.share_viewer_token(share=share, held=request.session.get(key, ""))
        request.session[key] = viewer_token
    return render(
        request,
        "imaging/shares/contents.html",
        {
            "share": share,
            "token": token,
            "patient": share.patient,
            "studies": studies,
            "documents": documents,
            # One DICOMweb token of the share for the viewer links of this page: it travels in
            # the links' fragment (#token=), which no request line, hence no log, carries.
            "viewer_token": viewer_token,
        },
    )


def _refused(request, share, object_type, object_id):
    record_refusal(
        actor=shares.recipient_actor(request, share),
        object_type=object_type,
        object_id=object_id,
        patient=share.patient,
        reason=f"not in share {share.pk}",
    )
    raise Http404


@require_http_methods(["GET"])
@share_link(granted=True)
def share_study(request, share, token, study_id):
    study = shares.shared_studies(share).filter(pk=study_id).select_related("patient").first()
    if study is None:
        _refused(request, share, "imaging.study", study_id)
    shares.share_opened(
        share=share, actor=shares.recipient_actor(request, share), what="viewer", obj=study
    )
    studies, _documents = shares.share_contents(share)
    config = selectors.viewer_config_of(
        study=study,
        studies=[study, *[other for other in studies if other.pk != study.pk]],
        user_info={"id": None, "name": share.recipient_name},
    )
    return render(
        request,
        "imaging/shares/viewer.html",
        {
            "share": share,
            "token": token,
            "study": study,
            "patient": share.patient,
            "viewer": config,
        },
    )


@require_http_methods(["GET"])
@share_link(granted=True)
def share_document(request, share, token, document_id):
    item = share.documents.filter(pk=document_id).select_related("content_type").first()
    if item is None:
        _refused(request, share, "imaging.sharedocument", document_id)
    document = item.content_type.get_object_for_this_type(pk=item.object_id)
    if isinstance(document, StudyReport) and document.kind == StudyReport.Kind.SR:
        # A structured report is text the portal indexed: shown as it is, no archive read.
        shares.share_opened(
            share=share, actor=shares.recipient_actor(request, share), what="document", obj=document
        )
        return render(
            request,
            "imaging/shares/report.html",
            {"share": share, "token": token, "report": document, "patient": share.patient},
        )
    try:
        data = _document_bytes(document)
    except ArchiveError:
        messages.error(request, _("The regional archive does not answer: try again shortly."))
        return redirect("share-contents", token=token)
    except Exception:  # noqa: BLE001 (an altered or missing file: never served, said plainly)
        messages.error(request, _("This document cannot be shown: ask the doctor who shared it."))
        return redirect("share-contents", token=token)
    shares.share_opened(
        share=share, actor=shares.recipient_actor(request, share), what="document", obj=document
    )
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="document-{item.pk}.pdf"'
    return response


def _document_bytes(document) -> bytes:
    """A study report from the archive, or a generated document by its verified read."""
    if isinstance(document, StudyReport):
        return study_report_document(document)
    from portal import documents as generated

    return generated.read(document)


# --- The recipient's DICOMDIR package (imaging.shares.share_package_request) ---------------
# share_link is the outer decorator: an unknown link is a 404 and an ended share a 410 (its
# package no longer served) whatever the method, before the method is even looked at.


@share_link(granted=True)
@require_POST
def share_package_request(request, share, token):
    """ "Download the images (DICOMDIR)" on the contents page."""
    try:
        package = shares.share_package_request(
            share=share, actor=shares.recipient_actor(request, share)
        )
    except shares.ShareError as error:
        messages.error(request, str(error))
        return redirect("share-contents", token=token)
    return redirect("share-package", token=token, package_id=package.pk)


def _share_package_or_404(request, share, package_id):
    package = shares.share_package(share, package_id)
    if package is None:
        _refused(request, share, "imaging.studypackage", package_id)
    return package


def _package_urls(token, package) -> dict:
    # The page itself answers the block's polls (an htmx request): see share_package_detail.
    return {
        "progress_url": reverse("share-package", args=[token, package.pk]),
        "download_url": reverse("share-package-download", args=[token, package.pk]),
    }


@share_link(granted=True)
@require_GET
def share_package_detail(request, share, token, package_id):
    """The package's page (an opening of the share); polled by its block through htmx, it
    answers the block alone: state and counts, no images nor identity, no audit event."""
    package = _share_package_or_404(request, share, package_id)
    context = {"share": share, "token": token, "package": package, **_package_urls(token, package)}
    if request.headers.get("HX-Request") == "true":
        return render(request, "imaging/_package_progress.html", context)
    shares.share_opened(
        share=share, actor=shares.recipient_actor(request, share), what="package", obj=package
    )
    studies = package.studies.order_by("study_date", "study_time", "pk")
    return render(
        request,
        "imaging/shares/package.html",
        {**context, "patient": share.patient, "studies": studies},
    )


@share_link(granted=True)
@require_GET
def share_package_download(request, share, token, package_id):
    """The zip as an attachment, checked against its SHA-256 first; audited as an export in
    the recipient's name."""
    package = _share_package_or_404(request, share, package_id)
    back = redirect("share-package", token=token, package_id=package.pk)
    if package.status != package.Status.READY:
        messages.info(request, _("The package is not ready to download."))
        return back
    actor = shares.recipient_actor(request, share)
    try:
        stream = packages.open_verified(package)
    except packages.PackageCorrupted:
        packages.package_integrity_failed(package=package, by=actor)
        messages.error(
            request, _("The file of the package was altered or lost: ask for a new one.")
        )
        return back
    shares.share_package_downloaded(share=share, package=package, actor=actor)
    return FileResponse(
        stream,
        as_attachment=True,
        filename=f"dicomdir-{package.pk}.zip",
        content_type="application/zip",
    )
