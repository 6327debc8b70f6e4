"""Letters the portal writes to a patient: the report of who accessed their record, for the
patient who asks (RGPD art. 15, right of access; CSP L1110-4 for the record's confidentiality).

* :func:`access_letter_context` — what the French template ``portal/documents/access_letter.html``
  prints: the letterhead of the establishment that answers, the patient's identity, the
  period, and the accesses in pages of :data:`ROWS_PER_PAGE` rows, in words a patient reads
  (who, in which role and establishment, why, what), without the trail's internal ids, hashes,
  IP addresses or session data;
* :func:`render_access_letter` — the PDF, made in the request with the documents capability's
  mechanics (:mod:`portal.documents`: French, Paris time, the print style; :mod:`portal.pdf`:
  WeasyPrint fetching only the portal's static files). It is not stored: the EXPORT event of
  the view keeps its SHA-256, and a new letter is made for each request (the trail grows).

Who may produce it: the data protection officer only (portal.view_auditevent, the reader of
the trail): the letter names every professional of the region who opened the record, which
is audit data, not the admissions office's (whose permission is about care teams). An
establishment that receives a patient's request forwards it to the DPO, who chooses that
establishment's letterhead among the patient's establishments.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.utils import timezone, translation

from portal import documents
from portal import pdf as portal_pdf
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    AuditPurpose,
    Establishment,
    Patient,
    Profession,
)

TEMPLATE = "portal/documents/access_letter.html"
# About thirty rows fit an A4 page under the table's header with the page's margins: each
# page of the letter is one table, so that no page ends in the middle of a row.
ROWS_PER_PAGE = 30

# Rendered in the request: about 1.7 s of CPU for 300 rows (WeasyPrint's table layout).
# A longer period is refused with a word to shorten it, rather than hold a worker for long.
MAX_ROWS = 1500


class LetterTooLong(ValueError):
    """More accesses in the period than one letter made in the request holds."""


# The letter's own wording, not the interface's catalogue: what a patient reads, the same
# whatever the state of the translations (as expertise/pdf.py does for its record).
PURPOSE_FR = {
    AuditPurpose.CARE: "Soins",
    AuditPurpose.RCP: "Réunion de concertation (RCP)",
    AuditPurpose.EXPERTISE: "Télé-expertise",
    AuditPurpose.ADMINISTRATION: "Administration du dossier",
    AuditPurpose.AUDIT: "Contrôle des accès",
    AuditPurpose.EMERGENCY: "Accès en urgence",
}
EVENT_FR = {
    AuditEventId.INSTANCES_ACCESSED: "Consultation d'images médicales",
    AuditEventId.INSTANCES_TRANSFERRED: "Transfert d'images médicales",
    AuditEventId.STUDY_DELETED: "Suppression d'un examen d'imagerie",
    AuditEventId.EXPORT: "Export ou impression",
    AuditEventId.IMPORT: "Ajout d'examens ou de documents",
    AuditEventId.QUERY: "Recherche",
    AuditEventId.SECURITY_ALERT: "Modification des droits d'accès",
    AuditEventId.EMERGENCY_OVERRIDE: "Accès en urgence (bris de glace)",
    AuditEventId.AUDIT_LOG_USED: "Lecture du journal des accès",
}
RECORD_FR = {
    AuditAction.CREATE: "Création du dossier",
    AuditAction.READ: "Consultation du dossier",
    AuditAction.UPDATE: "Mise à jour du dossier",
    AuditAction.DELETE: "Suppression dans le dossier",
    AuditAction.EXECUTE: "Opération sur le dossier",
}
PROFESSION_FR = {
    Profession.PHYSICIAN: "Médecin",
    Profession.MIDWIFE: "Sage-femme",
    Profession.NURSE: "Infirmier(ère)",
}
AUTOMATIC = "Traitement automatique du portail"


@dataclass(frozen=True)
class AccessRow:
    occurred_at: dt.datetime
    who: str
    role: str
    establishment: str
    purpose: str
    action: str
    refused: bool


def _action(event: AuditEvent) -> str:
    if event.event_id == AuditEventId.PATIENT_RECORD:
        label = RECORD_FR.get(event.action, RECORD_FR[AuditAction.EXECUTE])
    else:
        label = EVENT_FR.get(event.event_id, "Accès au dossier")
    if event.outcome != AuditOutcome.SUCCESS:
        # A refused attempt is an access the patient has a right to know of too.
        if event.event_id == AuditEventId.SECURITY_ALERT:
            return "Tentative d'accès refusée"
        return f"Tentative refusée : {label[0].lower()}{label[1:]}"
    return label


def _role(event: AuditEvent) -> str:
    actor = event.actor
    professional = getattr(actor, "professional", None) if actor is not None else None
    if professional is None:
        return "" if actor is None else "Personnel administratif"
    if professional.specialty:
        return documents.specialty_label(professional.specialty)
    return PROFESSION_FR.get(professional.profession, str(professional.get_profession_display()))


def access_rows(*, patient: Patient, start: dt.date, end: dt.date) -> list[AccessRow]:
    """The accesses to ``patient``'s record from ``start`` to ``end`` (days in Paris, both
    included), oldest first, in two queries whatever their number."""
    paris = documents.PARIS
    since = dt.datetime.combine(start, dt.time.min, tzinfo=paris)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=paris)
    events = list(
        AuditEvent.objects.filter(patient=patient, occurred_at__gte=since, occurred_at__lt=until)
        .select_related("actor__professional")
        .only(
            "occurred_at",
            "event_id",
            "action",
            "outcome",
            "purpose",
            "actor_name",
            "actor_establishment",
            "actor__id",
            "actor__professional__specialty",
            "actor__professional__profession",
        )
        .order_by("occurred_at", "id")
    )
    finess = {event.actor_establishment for event in events if event.actor_establishment}
    names = dict(Establishment.objects.filter(finess__in=finess).values_list("finess", "name"))
    return [
        AccessRow(
            occurred_at=timezone.localtime(event.occurred_at, paris),
            who=event.actor_name if event.actor_id else AUTOMATIC,
            role=_role(event),
            establishment=names.get(event.actor_establishment, event.actor_establishment),
            purpose=PURPOSE_FR.get(event.purpose, ""),
            action=_action(event),
            refused=event.outcome != AuditOutcome.SUCCESS,
        )
        for event in events
    ]


def access_letter_context(
    *, patient: Patient, establishment: Establishment | None, start: dt.date, end: dt.date
) -> dict:
    """The template's context (rendered in French, Paris time, by render_access_letter)."""
    rows = access_rows(patient=patient, start=start, end=end)
    if len(rows) > MAX_ROWS:
        raise LetterTooLong(len(rows))
    pages = [rows[i : i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)]
    return {
        "patient": patient,
        "sex": patient.get_sex_display(),
        "ins": documents.ins_context(patient),
        "establishment": establishment,
        # An address if the establishment's record has one (the directory may bring it).
        "address": getattr(establishment, "address", "") if establishment else "",
        "start": start,
        "end": end,
        "pages": pages,
        "count": len(rows),
        "people": len({(row.who, row.establishment) for row in rows if row.who != AUTOMATIC}),
    }


def render_access_letter(
    *, patient: Patient, establishment: Establishment | None, start: dt.date, end: dt.date
) -> bytes:
    """The letter as a PDF, in French and Paris time whatever the reader's language."""
    with translation.override(documents.LANGUAGE), timezone.override(documents.PARIS):
        context = {
            "css_url": portal_pdf.static_url(documents.STYLESHEET),
            "logo_url": portal_pdf.static_url(documents.LOGO),
            "generated_at": timezone.now(),
            **access_letter_context(
                patient=patient, establishment=establishment, start=start, end=end
            ),
        }
        html = render_to_string(TEMPLATE, context)
    return portal_pdf.write_pdf(html)


def download_name(end: dt.date) -> str:
    """No patient name in the file name (download folders and mail gateways keep it)."""
    return f"releve-des-acces-{end:%Y%m%d}.pdf"
