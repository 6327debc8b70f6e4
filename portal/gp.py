"""The patient's declared general practitioner ("médecin traitant").

The patient chooses their GP and tells those who treat them; the portal records the choice
from the patient page (a clinician of the care team or the establishment's administration,
portal.permissions.may_declare_gp) or from an establishment's HL7 feed (PD1-4 and ROL
segments, portal.hl7). A declaration has a start date and a source. The GP's access to the
record follows it: the declared GP gets a GP care relationship (and the object permission it
grants: his home page lists the patient's news, portal.home), and the previous GP's ends,
"another GP declared", so he loses the record unless another relationship keeps it open.

One active GP per patient is a database constraint (care_relationship_one_gp); the services
here are the only ones that replace him.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from portal import permissions
from portal.audit import Actor
from portal.directory_accounts import link_professional
from portal.directory_models import DirectoryPerson
from portal.models import (
    CareRelationship,
    CareRole,
    Establishment,
    GpDeclarationSource,
    Patient,
    Profession,
    Professional,
)
from portal.notifications import notify
from portal.services import (
    GP_REPLACED_REASON,
    _actor_display_name,
    _refuse_care_team_change,
    _sync_patient_permission,
    access_changed,
    audit_care_team_change,
    current_gp_relationship,
    declared_since,
    end_running_relationship,
)

# Why the GP's relationship ended on a withdrawal (CareRelationship.end_reason; a replacement
# ends it with services.GP_REPLACED_REASON).
WITHDRAWN_REASON = "GP declaration withdrawn"

# ``seen_current`` not given: the caller (a feed) did not look at the current GP first.
NOT_CHECKED = object()


class GpAlreadyDeclared(ValidationError):
    """The professional is already the patient's declared GP (a repeated message or click)."""


class GpDeclarationStale(ValidationError):
    """The declaration was made on an outdated view of the patient's GP: another GP was
    declared meanwhile, or the new start date precedes the current GP's."""


def _replaced_elsewhere(*, patient, professional, current, source, establishment) -> bool:
    """Whether ``professional`` was the patient's GP until the ``current`` declaration, made
    by another source than this one (the portal, another establishment's feed)."""
    if current is None or (current.source, current.establishment_id) == (
        source,
        establishment.pk if establishment else None,
    ):
        return False
    return CareRelationship.objects.filter(
        patient=patient,
        professional=professional,
        role=CareRole.GP,
        ended_at__isnull=False,
        ended_at__lte=current.started_at,
    ).exists()


def _check_start_date(started_on) -> None:
    if not isinstance(started_on, dt.date):
        raise ValidationError(_("Give the date from which the GP is declared."))
    if started_on > timezone.localdate():
        raise ValidationError(_("The GP's start date cannot be in the future."))


def _professional_of(professional, *, by: Actor) -> Professional:
    """A Professional, or the one of a directory person (an account is made if needed)."""
    if isinstance(professional, DirectoryPerson):
        return link_professional(professional, by=by).professional
    return professional


def _end_current(*, current: CareRelationship, by: Actor, reason: str) -> None:
    if not end_running_relationship(relationship=current, by=by, reason=reason):
        raise GpDeclarationStale(
            _("The patient's GP changed meanwhile: look at the page again before declaring.")
        )
    _sync_patient_permission(patient=current.patient, professional=current.professional)


def gp_declare(
    *,
    by: Actor,
    patient: Patient,
    professional: Professional | DirectoryPerson,
    started_on: dt.date | None,
    source: str,
    establishment: Establishment | None = None,
    seen_current=NOT_CHECKED,
    detail: dict | None = None,
) -> CareRelationship:
    """Declare ``professional`` the GP of ``patient`` from ``started_on``: the current GP's
    relationship ends ("another GP declared") and the new one opens, in one transaction with
    one audit event on the patient; both GPs' cached access decisions are forgotten, and the
    new GP (and the previous one) is told, without a word of the patient.

    ``professional`` may be a person of the national directory: he becomes a Professional
    (with an account if he has none, portal.directory_accounts.link_professional).
    ``source`` is "portal" or "hl7" (then ``establishment`` is the feed's sender).
    ``seen_current``: the id of the GP relationship the person declaring saw (None: no GP);
    when another was declared meanwhile the declaration is refused (GpDeclarationStale), as
    is one that starts before the current GP's declaration. ``started_on`` None is an undated
    declaration (an HL7 feed's PD1-4, a ROL without ROL-5): it starts today, but it does not
    bring back a GP whom a declaration made elsewhere (the portal, another establishment's
    feed) has replaced since (GpDeclarationStale): an establishment's record that still names
    the old GP would otherwise take the patient back from the new one at every message. A
    dated declaration, or one made in the portal, can.
    ``detail`` adds context to the audit event (the HL7 message).

    Who: portal.permissions.may_declare_gp (PermissionDenied, audited); the feed is code.
    Raises GpAlreadyDeclared when he already is the GP, ValidationError for a date in the
    future or a professional who is not an active physician.
    """
    if source not in GpDeclarationSource.values:
        raise ValueError(f"unknown source of the GP declaration: {source!r}")
    if by.user is not None and not permissions.may_declare_gp(user=by.user, patient=patient):
        _refuse_care_team_change(
            by=by, relationship_or_patient=patient, patient=patient, reason="may not declare GP"
        )
    undated = started_on is None
    started_on = timezone.localdate() if undated else started_on
    _check_start_date(started_on)
    with transaction.atomic():
        # Declarations of one patient's GP wait for one another (PostgreSQL): the second
        # sees what the first did.
        Patient.objects.select_for_update().filter(pk=patient.pk).first()
        professional = _professional_of(professional, by=by)
        # The médecin traitant is a physician (Code de la sécurité sociale, L162-5-3).
        if professional.profession != Profession.PHYSICIAN or not permissions.may_join_care_team(
            professional=professional
        ):
            raise ValidationError(
                _("Only an active physician of the directory can be declared the patient's GP.")
            )
        current = current_gp_relationship(patient)
        if seen_current is not NOT_CHECKED and seen_current != (current.pk if current else None):
            raise GpDeclarationStale(
                _(
                    "Another GP was declared for this patient meanwhile: look at the page "
                    "again before declaring."
                )
            )
        if current is not None and current.professional_id == professional.pk:
            raise GpAlreadyDeclared(
                _("%(name)s is already the patient's declared GP.")
                % {"name": professional.display_name}
            )
        if undated and _replaced_elsewhere(
            patient=patient,
            professional=professional,
            current=current,
            source=source,
            establishment=establishment,
        ):
            raise GpDeclarationStale(
                _(
                    "%(name)s was replaced as the patient's GP by the declaration of "
                    "%(since)s, made elsewhere: an undated declaration does not bring him back."
                )
                % {
                    "name": professional.display_name,
                    "since": declared_since(current).strftime("%d/%m/%Y"),
                }
            )
        if current is not None and started_on < declared_since(current):
            raise GpDeclarationStale(
                _(
                    "The start date precedes the current GP's (%(since)s): a newer "
                    "declaration is already recorded."
                )
                % {"since": declared_since(current).strftime("%d/%m/%Y")}
            )
        if current is not None:
            _end_current(current=current, by=by, reason=GP_REPLACED_REASON)
        try:
            with transaction.atomic():
                relationship = CareRelationship.objects.create(
                    patient=patient,
                    professional=professional,
                    role=CareRole.GP,
                    establishment=establishment,
                    started_on=started_on,
                    source=source,
                    created_by=by.user if by.is_authenticated else None,
                )
        except IntegrityError:
            # care_relationship_one_gp: a declaration committed between our read and write
            # (a database without row locks).
            raise GpDeclarationStale(
                _(
                    "Another GP was declared for this patient meanwhile: look at the page "
                    "again before declaring."
                )
            ) from None
        _sync_patient_permission(patient=patient, professional=professional)
        # Grants cached for the viewer and DICOMweb were decided before the change.
        access_changed(user_id=professional.user_id)
        if current is not None:
            access_changed(user_id=current.professional.user_id)
        audit_care_team_change(
            by=by,
            relationship=relationship,
            detail={
                **(detail or {}),
                "gp_declared": professional.rpps,
                "granted_to": professional.user.email,
                "started_on": started_on.isoformat(),
                "source": source,
                "establishment": establishment.finess if establishment else "",
                "previous_gp": current.professional.rpps if current else "",
                "reason": GP_REPLACED_REASON if current else "",
            },
        )
        _tell(
            by=by,
            patient=patient,
            new=professional,
            previous=current.professional if current else None,
        )
    return relationship


def _tell(*, by: Actor, patient: Patient, new: Professional, previous: Professional | None):
    """The new GP learns it (the link leads to the record, where his rights apply); the
    previous one learns he was replaced, without a link: the record no longer opens for him."""
    who = _actor_display_name(by.user) if by.user is not None else ""
    params = {"by": who} if who else {}
    if by.user is None or by.user.pk != new.user_id:
        notify(
            [new.user],
            gettext_noop("%(by)s declared you the general practitioner of a patient.")
            if who
            else gettext_noop("You were declared the general practitioner of a patient."),
            reverse("patient-detail", kwargs={"patient_id": patient.pk}),
            params=params,
        )
    if previous is not None and (by.user is None or by.user.pk != previous.user_id):
        notify(
            [previous.user],
            gettext_noop("Another general practitioner was declared for one of your patients."),
            "",
            params={},
        )


def gp_withdraw(
    *,
    by: Actor,
    patient: Patient,
    source: str,
    establishment: Establishment | None = None,
    professional: Professional | None = None,
    detail: dict | None = None,
) -> CareRelationship | None:
    """End the patient's GP declaration (HL7 ROL action DE): his relationship ends, "GP
    declaration withdrawn", audited on the patient. With ``professional``, only if he is the
    current GP (a withdrawal of someone else's declaration changes nothing). Returns the ended
    relationship, or None when there was nothing to end."""
    if source not in GpDeclarationSource.values:
        raise ValueError(f"unknown source of the GP declaration: {source!r}")
    if by.user is not None and not permissions.may_declare_gp(user=by.user, patient=patient):
        _refuse_care_team_change(
            by=by, relationship_or_patient=patient, patient=patient, reason="may not declare GP"
        )
    with transaction.atomic():
        Patient.objects.select_for_update().filter(pk=patient.pk).first()
        current = current_gp_relationship(patient)
        if current is None or (
            professional is not None and current.professional_id != professional.pk
        ):
            return None
        _end_current(current=current, by=by, reason=WITHDRAWN_REASON)
        access_changed(user_id=current.professional.user_id)
        audit_care_team_change(
            by=by,
            relationship=current,
            detail={
                **(detail or {}),
                "gp_withdrawn": current.professional.rpps,
                "revoked_from": current.professional.user.email,
                "source": source,
                "establishment": establishment.finess if establishment else "",
                "reason": WITHDRAWN_REASON,
            },
        )
        notify(
            [current.professional.user],
            gettext_noop("You are no longer the declared general practitioner of a patient."),
            "",
            params={},
        )
    return current
