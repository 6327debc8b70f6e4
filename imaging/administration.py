"""An establishment's DICOM declaration, changed by the region's administrators (the page in
imaging.admin_views): the PACS destination and prefetch settings, and the calling AE titles the
gateway accepts associations from (imaging.gateway)."""

from __future__ import annotations

import hashlib
import json

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from imaging.models import CallingAETitle, DicomDeclaration
from portal import audit, permissions
from portal.access import record_refusal
from portal.audit import Actor
from portal.models import AuditPurpose, Establishment

DECLARATION_FIELDS = (
    "pacs_ae_title",
    "pacs_host",
    "pacs_port",
    "pacs_tls",
    "prefetch_enabled",
    "prefetch_years",
    "prefetch_max_studies",
    "prefetch_modalities_first",
)


def declaration_of(establishment: Establishment) -> DicomDeclaration:
    """The declaration, unsaved and empty when the establishment has none yet."""
    return DicomDeclaration.objects.filter(establishment=establishment).first() or (
        DicomDeclaration(establishment=establishment)
    )


def declaration_fingerprint(declaration: DicomDeclaration) -> str:
    """The values as read, for refusing a save over another administrator's change."""
    titles = []
    if declaration.pk:
        titles = sorted(
            (t.ae_title, t.allowed_address or "") for t in declaration.calling_ae_titles.all()
        )
    values = [str(getattr(declaration, name)) for name in DECLARATION_FIELDS] + [titles]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32]


def declaration_save(
    *,
    establishment: Establishment,
    by: Actor,
    fields: dict,
    calling_ae_titles: dict[str, str | None],
    seen: str,
) -> DicomDeclaration:
    """Write the declaration and replace its calling AE titles (unique in the region) if
    nothing changed since the form was read; audited as a configuration change."""
    if not permissions.may_manage_establishments(by.user):
        record_refusal(
            actor=by,
            object_type="imaging.dicomdeclaration",
            object_id=establishment.pk,
            reason="not regional",
        )
        raise PermissionDenied
    with transaction.atomic():
        Establishment.objects.select_for_update().filter(pk=establishment.pk).first()
        declaration = declaration_of(establishment)
        if declaration_fingerprint(declaration) != seen:
            raise ValidationError(
                _(
                    "Someone changed this DICOM declaration while you were editing it: "
                    "nothing was saved. Here are its current values."
                ),
                code="stale",
            )
        taken = list(
            CallingAETitle.objects.filter(ae_title__in=list(calling_ae_titles))
            .exclude(declaration__establishment=establishment)
            .select_related("declaration__establishment")
        )
        if taken:
            raise ValidationError(
                _("The AE title %(title)s is already declared by %(establishment)s.")
                % {
                    "title": taken[0].ae_title,
                    "establishment": taken[0].declaration.establishment.name,
                },
                code="taken",
            )
        for name in DECLARATION_FIELDS:
            setattr(declaration, name, fields[name])
        declaration.full_clean(exclude=["establishment"])
        declaration.save()
        declaration.calling_ae_titles.exclude(ae_title__in=list(calling_ae_titles)).delete()
        for title, address in calling_ae_titles.items():
            CallingAETitle.objects.update_or_create(
                declaration=declaration, ae_title=title, defaults={"allowed_address": address}
            )
        audit.record(
            actor=by,
            event=audit.AuditEventId.SECURITY_ALERT,
            event_type=audit.AuditEventType.SOFTWARE_CONFIGURATION,
            action=audit.AuditAction.UPDATE,
            obj=declaration,
            purpose=AuditPurpose.ADMINISTRATION,
            detail={
                "establishment": establishment.finess,
                "pacs": [declaration.pacs_ae_title, declaration.pacs_host, declaration.pacs_port],
                "pacs_tls": declaration.pacs_tls,
                "calling_ae_titles": sorted(calling_ae_titles),
            },
        )
    return declaration
