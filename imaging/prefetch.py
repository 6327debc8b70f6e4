"""The prefetch of priors: a patient's studies made by other establishments, sent to the PACS
of the establishment that admits the patient (HL7 ADT A01/A04/A05), or on demand from the
dossier, so that its radiologists read today's images next to the priors in their own viewer.

The regional gateway sends them as a Storage SCU (C-STORE, PS3.4 Annex B; PS3.7 §9.1.1) to
the destination AE the establishment declared (DicomDeclaration.pacs_*), one association per
study (imaging.dicom_send), from a Celery task (imaging.tasks.prefetch_send) with retries.

The selection respects the patient's opposition to sharing between establishments
(imaging.selectors.shared_with_establishments): an opposed patient's studies made elsewhere
never leave. A study already delivered to that PACS, or on its way there, is not sent again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _

from imaging.archive import ArchiveUnavailable
from imaging.dicom_send import DestinationUnreachable, destination_of, send_instances
from imaging.models import (
    DicomDeclaration,
    Instance,
    PrefetchItem,
    PrefetchRequest,
    PrefetchTrigger,
    Study,
    StudyIdentity,
)
from imaging.selectors import shared_with_establishments
from portal import audit
from portal.access import may_open_patient
from portal.audit import Actor
from portal.models import Establishment, Patient
from portal.task_queue import enqueue_on_commit

ADMISSION_TRIGGERS = {PrefetchTrigger.A01, PrefetchTrigger.A04, PrefetchTrigger.A05}
ERROR_LENGTH = 300  # PrefetchRequest.error
# Longer than the task's longest wait between two attempts (imaging.tasks), and than any
# one instance's C-STORE (imaging.dicom_send timeouts): progress touches updated_at.
STALE_AFTER = dt.timedelta(hours=1)

State = PrefetchRequest.State


# --- Selection ------------------------------------------------------------------------------


def _years_ago(today: dt.date, years: int) -> dt.date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def _pending_or_delivered(establishment: Establishment) -> QuerySet[PrefetchItem]:
    """Items already delivered to the establishment's PACS, or still on their way there (a
    request queued, sending, or failed but to be tried again). A request that has not moved
    for STALE_AFTER lost its task (a worker killed, a broker emptied): its studies may go
    with the next request rather than never."""
    alive = Q(request__updated_at__gte=timezone.now() - STALE_AFTER)
    return PrefetchItem.objects.filter(request__establishment=establishment).filter(
        Q(sent=True)
        | (alive & Q(request__state__in=[State.QUEUED, State.SENDING]))
        | (alive & Q(request__state=State.FAILED, request__will_retry=True))
    )


def priors_to_prefetch(
    *,
    patient: Patient,
    establishment: Establishment,
    declaration: DicomDeclaration,
    context_study: Study | None = None,
) -> list[Study]:
    """The patient's studies to send to ``establishment``'s PACS, in the order to send them.

    MATCHED studies of the patient made by other establishments (or of unknown origin, an
    outside CD), dated within the declaration's years (else settings.PREFETCH_YEARS), that the
    opposition lets this establishment see, not yet delivered nor on their way; at most the
    declaration's count (else settings.PREFETCH_MAX_STUDIES). First those like
    ``context_study`` (same modality or body region), else those of the declaration's
    modalities first, then the most recent.
    """
    years = (
        declaration.prefetch_years
        if declaration.prefetch_years is not None
        else settings.PREFETCH_YEARS
    )
    limit = (
        declaration.prefetch_max_studies
        if declaration.prefetch_max_studies is not None
        else settings.PREFETCH_MAX_STUDIES
    )
    if limit <= 0:
        return []
    since = _years_ago(timezone.localdate(), years)
    studies = (
        Study.objects.filter(patient=patient, identity=StudyIdentity.MATCHED)
        .exclude(establishment=establishment)
        .filter(shared_with_establishments([establishment.pk]))
        .filter(study_date__gte=since)
        .exclude(pk__in=_pending_or_delivered(establishment).values("study"))
    )
    preferred = Q(pk__in=[])
    if context_study is not None:
        for modality in filter(None, context_study.modalities.split("/")):
            preferred |= Q(modalities__contains=modality)
        for body_part in filter(None, context_study.body_part.split(", ")):
            preferred |= Q(body_part__icontains=body_part)
    else:
        for modality in declaration.modalities_first:
            preferred |= Q(modalities__contains=modality)
    studies = studies.annotate(
        preferred=Case(
            When(preferred, then=Value(1)), default=Value(0), output_field=IntegerField()
        )
    ).order_by("-preferred", "-study_date", F("study_time").desc(nulls_last=True), "-pk")
    return list(studies[:limit])


# --- Requests -------------------------------------------------------------------------------


def declared_pacs(establishment: Establishment) -> DicomDeclaration | None:
    """The establishment's DICOM declaration if it names a PACS, else None."""
    declaration = DicomDeclaration.objects.filter(establishment=establishment).first()
    return declaration if declaration is not None and declaration.has_pacs else None


def prefetch_request_create(
    *,
    patient: Patient,
    establishment: Establishment,
    trigger: str,
    by: Actor,
    context_study: Study | None = None,
) -> PrefetchRequest | None:
    """Select the priors to send to ``establishment``'s PACS and queue their sending.

    None when the establishment declared no PACS or there is nothing to send. The task is
    scheduled on commit. Two requests for one establishment never pick the same study: the
    selection runs under a lock on the establishment's declaration.
    """
    with transaction.atomic():
        declaration = (
            DicomDeclaration.objects.select_for_update().filter(establishment=establishment).first()
        )
        if declaration is None or not declaration.has_pacs:
            return None
        studies = priors_to_prefetch(
            patient=patient,
            establishment=establishment,
            declaration=declaration,
            context_study=context_study,
        )
        if not studies:
            return None
        request = PrefetchRequest.objects.create(
            patient=patient,
            establishment=establishment,
            trigger=trigger,
            requested_by=by.user if by.is_authenticated else None,
            destination_ae_title=declaration.pacs_ae_title,
            # Every instance goes, reports included (Study.instance_count counts images only).
            instances_total=Instance.objects.filter(series__study__in=studies).count(),
        )
        PrefetchItem.objects.bulk_create(
            PrefetchItem(request=request, study=study, position=position)
            for position, study in enumerate(studies)
        )
        enqueue_on_commit("imaging.prefetch_send", request.pk)
    return request


class NotEntitled(Exception):
    """The user may not send this patient's priors to this establishment's PACS."""


def prefetch_on_demand(
    *,
    patient: Patient,
    establishment: Establishment,
    by: Actor,
    context_study: Study | None = None,
) -> PrefetchRequest | None:
    """A user asks, from the dossier, that the patient's priors be sent to the PACS of one of
    their establishments now. Audited (110110, the request and the studies it selected) even
    when nothing is left to send: the patient's studies were looked through on the user's
    behalf. Raises NotEntitled unless the user may open the patient and works there."""
    if not (
        by.is_authenticated
        and may_open_patient(by.user, patient.pk)
        and establishment in pacs_establishments_of(by.user)
    ):
        raise NotEntitled
    with transaction.atomic():
        request = prefetch_request_create(
            patient=patient,
            establishment=establishment,
            trigger=PrefetchTrigger.ON_DEMAND,
            by=by,
            context_study=context_study,
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.EXECUTE,
            patient=patient,
            object_type="imaging.prefetchrequest",
            object_id=str(request.pk) if request is not None else "",
            purpose=audit.AuditPurpose.CARE,
            detail={
                "action": "prefetch requested",
                "finess": establishment.finess,
                "studies": (
                    list(request.studies.values_list("study_instance_uid", flat=True))
                    if request is not None
                    else []
                ),
            },
        )
    return request


def prefetch_on_admission(*, patient: Patient, establishment: Establishment, trigger: str):
    """An establishment admitted or registered ``patient`` (portal.events.patient_admitted):
    queue its priors for that establishment's PACS, if it declared one and wants them."""
    if trigger not in ADMISSION_TRIGGERS:
        return None
    declaration = declared_pacs(establishment)
    if declaration is None or not declaration.prefetch_enabled:
        return None
    return prefetch_request_create(
        patient=patient,
        establishment=establishment,
        trigger=trigger,
        by=Actor.system(f"prefetch {trigger}"),
    )


def on_patient_admitted(sender, *, patient, establishment, trigger, **kwargs) -> None:
    """Receiver of portal.events.patient_admitted (connected in ImagingConfig.ready); the HL7
    feed sends it robustly on commit, so a failure here never changes the message's ACK."""
    prefetch_on_admission(patient=patient, establishment=establishment, trigger=trigger)


# --- Sending --------------------------------------------------------------------------------


def _destination_detail(request: PrefetchRequest, declaration: DicomDeclaration | None) -> dict:
    return {
        "destination_ae_title": request.destination_ae_title,
        "destination": (
            f"{declaration.pacs_host}:{declaration.pacs_port}" if declaration is not None else ""
        ),
        "finess": request.establishment.finess,
    }


def _move(request_id: int, *, from_states, to: str, **fields) -> bool:
    """One guarded UPDATE: the request changes state only from one of ``from_states``."""
    return bool(
        PrefetchRequest.objects.filter(pk=request_id, state__in=from_states).update(
            state=to, updated_at=timezone.now(), **fields
        )
    )


def _claim(request_id: int) -> bool:
    """Take the request for sending; False when another worker has it or it is over."""
    return bool(
        PrefetchRequest.objects.filter(pk=request_id)
        .filter(Q(state=State.QUEUED) | Q(state=State.FAILED, will_retry=True))
        .update(
            state=State.SENDING,
            attempts=F("attempts") + 1,
            will_retry=False,
            error="",
            updated_at=timezone.now(),
        )
    )


@dataclass
class _Progress:
    request_id: int
    base: int

    def __call__(self, done: int, total: int) -> None:
        PrefetchRequest.objects.filter(pk=self.request_id, state=State.SENDING).update(
            instances_sent=self.base + done, updated_at=timezone.now()
        )


def prefetch_send(*, request_id: int, final_attempt: bool) -> PrefetchRequest | None:
    """Send a request's studies still to deliver, one association per study.

    When the PACS does not answer (DestinationUnreachable) or the regional archive does not
    (ArchiveUnavailable), the request reads "failed, will retry" and the error is raised for
    the task to try again, unless ``final_attempt``: then the request gives up with the
    reason. Instances the PACS refuses (a C-STORE failure status) end the request as failed,
    without retrying: the same files would be refused again.
    """
    if not _claim(request_id):
        return None
    request = PrefetchRequest.objects.select_related("patient", "establishment").get(pk=request_id)
    declaration = declared_pacs(request.establishment)
    actor = Actor(user=request.requested_by, name="prefetch")
    if declaration is None:
        _give_up(request, _("The establishment no longer declares a PACS."))
        return request
    destination = destination_of(declaration)
    # The patient may have opposed sharing since the request was queued.
    allowed = set(
        Study.objects.filter(prefetch_items__request=request)
        .filter(shared_with_establishments([request.establishment_id]))
        .values_list("pk", flat=True)
    )
    items = list(request.items.filter(sent=False).select_related("study"))
    withdrawn = [item for item in items if item.study_id not in allowed]
    if withdrawn:
        PrefetchItem.objects.filter(pk__in=[item.pk for item in withdrawn]).delete()
    items = [item for item in items if item.study_id in allowed]
    sent_now, refused, delivered_uids, failures = 0, 0, [], []
    try:
        for item in items:
            instances = list(
                Instance.objects.filter(series__study=item.study).order_by(
                    "series__series_number", "series__pk", "instance_number", "pk"
                )
            )
            base = request.instances_sent + sent_now
            result = send_instances(
                destination=destination,
                instances=instances,
                calling_ae_title=settings.DICOM_GATEWAY_AE_TITLE,
                on_progress=_Progress(request.pk, base),
            )
            sent_now += result.sent
            refused += result.failed
            failures.extend(result.failures)
            PrefetchItem.objects.filter(pk=item.pk).update(
                instances_sent=result.sent, sent=result.failed == 0
            )
            if result.failed == 0:
                delivered_uids.append(item.study.study_instance_uid)
    except (DestinationUnreachable, ArchiveUnavailable) as error:
        _audit_transfer(request, actor, declaration, delivered_uids, sent_now, refused, str(error))
        if isinstance(error, ArchiveUnavailable):
            reason = _("The regional archive does not answer: %(error)s") % {"error": error}
        else:
            reason = _("The PACS does not answer: %(error)s") % {"error": error}
        if final_attempt:
            _give_up(request, reason, sent_now=sent_now)
            return request
        _move(
            request.pk,
            from_states=[State.SENDING],
            to=State.FAILED,
            will_retry=True,
            error=reason[:ERROR_LENGTH],
            instances_sent=request.instances_sent + sent_now,
        )
        raise
    if sent_now or refused:  # nothing left to send (the opposition withdrew it all): no transfer
        _audit_transfer(request, actor, declaration, delivered_uids, sent_now, refused, "")
    now = timezone.now()
    if refused:
        reason = _("The PACS refused %(count)d images: %(first)s") % {
            "count": refused,
            "first": failures[0] if failures else "",
        }
        _move(
            request.pk,
            from_states=[State.SENDING],
            to=State.FAILED,
            error=reason[:ERROR_LENGTH],
            instances_sent=request.instances_sent + sent_now,
            finished_at=now,
        )
    else:
        _move(
            request.pk,
            from_states=[State.SENDING],
            to=State.SENT,
            instances_sent=request.instances_sent + sent_now,
            instances_total=request.instances_sent + sent_now,
            finished_at=now,
        )
    request.refresh_from_db()
    return request


def _give_up(request: PrefetchRequest, reason: str, *, sent_now: int = 0) -> None:
    _move(
        request.pk,
        from_states=[State.SENDING],
        to=State.FAILED,
        will_retry=False,
        error=reason[:ERROR_LENGTH],
        instances_sent=request.instances_sent + sent_now,
        finished_at=timezone.now(),
    )
    request.refresh_from_db()


def _audit_transfer(
    request: PrefetchRequest,
    actor: Actor,
    declaration: DicomDeclaration,
    study_uids: list[str],
    sent: int,
    refused: int,
    error: str,
) -> None:
    """DCM 110104 "DICOM Instances Transferred" (PS3.15 A.5.3.2), as the source of the
    transfer (EventActionCode R), against the patient: one event per sending attempt."""
    if error and not sent:
        outcome = audit.AuditOutcome.SERIOUS_FAILURE
    elif error or refused:
        outcome = audit.AuditOutcome.MINOR_FAILURE
    else:
        outcome = audit.AuditOutcome.SUCCESS
    audit.record(
        actor=actor,
        event=audit.AuditEventId.INSTANCES_TRANSFERRED,
        action=audit.AuditAction.READ,
        outcome=outcome,
        obj=request,
        patient=request.patient,
        purpose=audit.AuditPurpose.CARE,
        detail={
            **_destination_detail(request, declaration),
            "trigger": request.trigger,
            "studies": study_uids,
            "instances_sent": sent,
            "instances_refused": refused,
            **({"error": error[:ERROR_LENGTH]} if error else {}),
        },
    )


# --- The dossier ----------------------------------------------------------------------------


def pacs_establishments_of(user) -> list[Establishment]:
    """The establishments ``user`` works for (their affiliations) that declared a PACS,
    the primary one first."""
    return list(
        Establishment.objects.filter(
            affiliations__professional__user=user,
            dicom_declaration__pacs_ae_title__gt="",
            dicom_declaration__pacs_host__gt="",
            dicom_declaration__pacs_port__isnull=False,
        )
        .annotate(primary=F("affiliations__is_primary"))
        .order_by("-primary", "name")
    )


def latest_requests(*, patient: Patient, establishments, limit: int = 3) -> list[PrefetchRequest]:
    """The latest prefetch requests of ``patient`` to these establishments' PACS."""
    return list(
        PrefetchRequest.objects.filter(patient=patient, establishment__in=establishments)
        .select_related("establishment")
        .order_by("-created_at", "-pk")[:limit]
    )
