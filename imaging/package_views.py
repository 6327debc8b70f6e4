"""DICOMDIR packages (imaging.packages): asked for from the viewer's study page or the imaging
dossier, followed on a page whose small block is polled while the package is made, then
downloaded as a zip attachment (audited as an export)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from imaging import packages
from imaging.access import get_package_for_user, get_study_for_user
from imaging.permissions import may_package_studies
from portal import audit
from portal.access import get_patient_for_user
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.views import patient_data_view


def _urls(package) -> dict:
    """Where the polled block (imaging/_package_progress.html) polls and downloads from."""
    args = [package.patient_id, package.pk]
    return {
        "progress_url": reverse("imaging-package-progress", args=args),
        "download_url": reverse("imaging-package-download", args=args),
    }


def _ask(request, patient, studies, *, back):
    try:
        package = packages.package_request(
            by=Actor.from_request(request), patient=patient, studies=studies
        )
    except packages.PackageRefused as refusal:
        messages.error(request, str(refusal))
        return back
    return redirect("imaging-package", patient_id=patient.pk, package_id=package.pk)


@patient_data_view
@require_POST
def study_package_request(request, study_id):
    """ "Download for local use (DICOMDIR)" on one study (the viewer's page)."""
    study = get_study_for_user(request, study_id)
    return _ask(request, study.patient, [study], back=redirect("study-viewer", study_id=study.pk))


@patient_data_view
@require_POST
def patient_package_request(request, patient_id):
    """The same from the imaging dossier: the studies ticked (``study`` ids), else all the
    studies of the dossier the user may take away."""
    patient = get_patient_for_user(request, patient_id)
    back = redirect("imaging-dossier", patient_id=patient.pk)
    available = packages.studies_to_package(user=request.user, patient=patient)
    wanted = request.POST.getlist("study")
    if wanted:
        if not all(value.isdigit() and len(value) <= 18 for value in wanted):
            messages.error(request, _("These studies are not all in this patient's dossier."))
            return back
        studies = list(available.filter(pk__in=set(wanted)))
        if len(studies) != len(set(wanted)):
            messages.error(request, _("These studies are not all in this patient's dossier."))
            return back
    else:
        studies = list(available)
    return _ask(request, patient, studies, back=back)


@patient_data_view
@require_GET
def package_detail(request, patient_id, package_id):
    """The package's page: what it holds, its progress, and its download once ready."""
    package = get_package_for_user(request, patient_id, package_id)
    audit.record_view(request, package, view="DICOMDIR package", patient=package.patient)
    return render(
        request,
        "imaging/package.html",
        {
            "package": package,
            "patient": package.patient,
            "studies": package.studies.select_related("establishment").order_by(
                "study_date", "study_time", "pk"
            ),
            **_urls(package),
        },
    )


@login_required
@never_cache
@require_GET
def package_progress(request, patient_id, package_id):
    """The package's state and counts only (no images, no identity), polled while it is
    made: it writes no audit event."""
    package = get_package_for_user(request, patient_id, package_id)
    return render(
        request,
        "imaging/_package_progress.html",
        {"package": package, "patient": package.patient, **_urls(package)},
    )


@patient_data_view
@require_GET
def package_download(request, patient_id, package_id):
    """The zip as an attachment, checked against its SHA-256 first (DCM 110106 Export)."""
    package = get_package_for_user(request, patient_id, package_id)
    back = redirect("imaging-package", patient_id=package.patient_id, package_id=package.pk)
    if package.status != package.Status.READY:
        messages.info(request, _("The package is not ready to download."))
        return back
    studies = list(package.studies.all())
    # Asked for weeks ago, perhaps: the patient may have opposed sharing since.
    if not may_package_studies(user=request.user, patient=package.patient, studies=studies):
        messages.error(request, _("You may not download these images."))
        return back
    actor = Actor.from_request(request)
    try:
        stream = packages.open_verified(package)
    except packages.PackageCorrupted:
        packages.package_integrity_failed(package=package, by=actor)
        messages.error(
            request, _("The file of the package was altered or lost: ask for a new one.")
        )
        return back
    audit.record(
        actor=actor,
        event=audit.AuditEventId.EXPORT,
        action=audit.AuditAction.READ,
        obj=package,
        patient=package.patient,
        purpose=AuditPurpose.CARE,
        detail={
            "format": "DICOMDIR zip",
            "studies": sorted(study.study_instance_uid for study in studies),
            "sha256": package.sha256,
            "size": package.size,
            # Files of the studies the zip does not hold (imaging.packages.UNDESCRIBABLE).
            "omitted": package.omitted_instances,
        },
    )
    return FileResponse(
        stream,
        as_attachment=True,
        filename=f"dicomdir-{package.pk}.zip",
        content_type="application/zip",
    )
