"""The DICOM declaration page of an establishment, for the regional administrators (linked from
the portal's establishment page: the portal does not import imaging)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from imaging import administration
from imaging.admin_forms import DicomDeclarationForm
from portal.access import get_establishment_for_administrator
from portal.audit import Actor


def _titles_text(declaration) -> str:
    if not declaration.pk:
        return ""
    return "\n".join(
        f"{t.ae_title} {t.allowed_address}".strip()
        for t in declaration.calling_ae_titles.order_by("ae_title")
    )


def _blank_form(establishment):
    declaration = administration.declaration_of(establishment)
    return DicomDeclarationForm(
        instance=declaration,
        initial={
            "calling_ae_titles": _titles_text(declaration),
            "seen": administration.declaration_fingerprint(declaration),
        },
    )


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def dicom_declaration(request, establishment_id):
    establishment = get_establishment_for_administrator(request, establishment_id, regional=True)
    if request.method != "POST":
        form = _blank_form(establishment)
    else:
        form = DicomDeclarationForm(
            request.POST, instance=administration.declaration_of(establishment)
        )
        if form.is_valid():
            try:
                administration.declaration_save(
                    establishment=establishment,
                    by=Actor.from_request(request),
                    fields=form.cleaned_data,
                    calling_ae_titles=form.cleaned_data["calling_ae_titles"],
                    seen=form.cleaned_data["seen"],
                )
            except ValidationError as error:
                messages.error(request, " ".join(error.messages))
                if error.code == "stale":
                    form = _blank_form(establishment)
            else:
                messages.success(request, _("The DICOM declaration was saved."))
                return redirect("administration-dicom", establishment_id=establishment.pk)
    return render(
        request,
        "imaging/admin/dicom_declaration.html",
        {"form": form, "establishment": establishment},
    )
