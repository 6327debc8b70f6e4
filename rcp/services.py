"""RCP services: scheduling, cases and their life cycle, attendance, decisions.

Every change of a case's state is audited (DCM 110110 on the patient's record). Edits carry
the revision they were made on: a stale one is refused, never silently merged.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.translation import gettext as _

from portal import audit, transitions
from portal.audit import Actor
from portal.models import AuditPurpose, Profession, Professional
from portal.services import access_changed
from portal.uploads import DOCUMENT_MAX_BYTES, sniff_content_type
from rcp import frcp
from rcp import permissions as may
from rcp.errors import NotAllowed, RcpError, StaleEdit
from rcp.models import (
    Attendance,
    Case,
    CaseDocument,
    Committee,
    CommitteeMember,
    Decision,
    Session,
    WrittenOpinion,
)
from rcp.quorum import MINIMUM_PHYSICIANS, session_quorum

State = Case.State

PRESENTATION_REGISTERED = frcp.CASE_REGISTERED
PRESENTATION_DISCUSSED = frcp.CASE_DISCUSSED
PHASE_INITIAL = frcp.PHASE_INITIAL
NATURE_ORGAN = frcp.NATURE_ORGAN


__all__ = ["NotAllowed", "RcpError", "StaleEdit"]  # raised here, defined in rcp.errors


def _refuse_unless_coordinating(case: Case, by: Actor) -> None:
    may.require(
        by,
        lambda user: may.may_plan_case(user=user, case=case),
        _("Only the chair or a coordinator can do this."),
    )


# A change of the case, on the patient's record (DCM 110110).
audit_case = audit.patient_change_recorder(purpose=AuditPurpose.CARE)


# --- Transitions ---------------------------------------------------------------------------

TRANSITIONS = {
    State.DRAFT: {State.SUBMITTED},
    State.SUBMITTED: {State.ON_AGENDA, State.DRAFT},
    # ON_AGENDA -> ON_AGENDA: postponed straight onto a later session's agenda.
    State.ON_AGENDA: {
        State.DISCUSSED,
        State.REGISTERED,
        State.POSTPONED,
        State.SUBMITTED,
        State.ON_AGENDA,
    },
    State.POSTPONED: {State.ON_AGENDA},
    # -> POSTPONED: the session closed before the decision was validated.
    State.REGISTERED: {State.ON_AGENDA, State.VALIDATED, State.POSTPONED},
    State.DISCUSSED: {State.VALIDATED, State.POSTPONED, State.ON_AGENDA},
    State.VALIDATED: {State.VALIDATED},  # a new version of the decision
}


def _audit_session(session: Session, by: Actor, detail: dict) -> None:
    """A change of the session's agenda or status (it covers several patients: none named)."""
    audit.record(
        actor=by,
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.UPDATE,
        object_type="rcp.session",
        object_id=str(session.pk),
        purpose=AuditPurpose.CARE,
        detail=detail,
    )


def _move(case: Case, to: str, *, by: Actor, changes: dict | None = None, **detail) -> Case:
    """Change the case's state (and ``changes``), only those columns: an edit saved meanwhile
    by somebody else is kept, and its author's next save is told (the revision moves).

    One UPDATE conditioned on the state and the session the caller saw, with its audit event
    in the same transaction: two coordinators acting on the same case at once, one wins and
    the other is refused (StaleEdit); an audit that fails undoes the change."""
    return transitions.move(
        case,
        to,
        transitions=TRANSITIONS,
        by=by,
        purpose=AuditPurpose.CARE,
        changes=changes,
        expect={"session_id": case.session_id},
        audit_detail=lambda before: {"rcp_case": f"{before} -> {to}", **detail},
        refused=lambda: RcpError(
            _("A case in state “%(state)s” cannot become “%(to)s”.")
            % {"state": case.get_state_display(), "to": State(to).label}
        ),
        stale=lambda: StaleEdit(
            _(
                "The case changed meanwhile (another coordinator or its doctor acted): "
                "nothing was done, reload it."
            )
        ),
    )


# --- Committees and sessions -------------------------------------------------------------------


def committee_create(
    *, name: str, kind: str, members: list[tuple[Professional, str]], by: Actor, **fields
):
    """A committee and its members, set up by the portal's administration (or the portal
    itself: seeding)."""
    may.require(
        by,
        lambda user: may.may_create_committee(user=user),
        _("Only the portal's administration sets up committees."),
    )
    with transaction.atomic():
        committee = Committee.objects.create(name=name, kind=kind, **fields)
        for professional, role in members:
            CommitteeMember.objects.create(
                committee=committee, professional=professional, role=role
            )
    return committee


EVERY = {
    "once": None,
    "weekly": dt.timedelta(weeks=1),
    "biweekly": dt.timedelta(weeks=2),
    "monthly": "monthly",
}


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    # The same weekday of the same week of the month: "every first Thursday".
    week = (moment.day - 1) // 7
    first = moment.replace(year=year, month=month, day=1)
    offset = (moment.weekday() - first.weekday()) % 7
    day = 1 + offset + 7 * week
    if day > 28:
        day -= 7 if (first + dt.timedelta(days=day - 1)).month != month else 0
    return first.replace(day=day)


def sessions_schedule(
    *,
    committee: Committee,
    first_start: dt.datetime,
    duration: dt.timedelta,
    every: str = "once",
    count: int = 1,
    deadline_before: dt.timedelta = dt.timedelta(days=2),
    place: str = "",
    video_url: str = "",
    by: Actor,
) -> list[Session]:
    """One session, or a recurring series (weekly, every other week, monthly), never in the
    past (see ``deadlines_passed`` for the warning on a deadline already over). Planned by
    the committee's chair or a coordinator (or the portal itself: seeding)."""
    may.require(
        by,
        lambda user: may.may_coordinate(user=user, committee=committee),
        _("Only the chair or a coordinator schedules sessions."),
    )
    if every not in EVERY:
        raise RcpError(_("Unknown recurrence."))
    if count < 1 or duration <= dt.timedelta():
        raise RcpError(_("A session lasts some time, and there is at least one."))
    count = 1 if every == "once" else count
    # Counted in Paris wall-clock time: a weekly 17:00 session stays at 17:00 across DST.
    first_start = timezone.localtime(first_start)
    series = uuid.uuid4() if count > 1 else None
    starts = [
        _add_months(first_start, n)
        if every == "monthly"
        else first_start + (EVERY[every] or dt.timedelta()) * n
        for n in range(count)
    ]
    now = timezone.now()
    past = [start for start in starts if start < now]
    if past:
        raise RcpError(
            _("A session cannot be planned in the past (%(start)s): choose a later date.")
            % {"start": timezone.localtime(past[0]).strftime("%d/%m/%Y %H:%M")}
        )
    sessions = []
    with transaction.atomic():
        for start in starts:
            sessions.append(
                Session.objects.create(
                    committee=committee,
                    starts_at=start,
                    ends_at=start + duration,
                    submission_deadline=start - deadline_before,
                    place=place or committee.place,
                    video_url=video_url or committee.video_url,
                    series=series,
                )
            )
    return sessions


def deadlines_passed(sessions: list[Session]) -> list[Session]:
    """Sessions scheduled whose case submission deadline is already over: the coordinator is
    warned (no case can be submitted in time for them), they are kept."""
    now = timezone.now()
    return [session for session in sessions if session.submission_deadline < now]


# --- Cases -----------------------------------------------------------------------------------

CASE_FIELDS = [
    "nature",
    "organ_system",
    "organ",
    "phase",
    "topography",
    "morphology",
    "diagnosis_date",
    "tnm_prefix",
    "tnm_t",
    "tnm_n",
    "tnm_m",
    "performance_status",
    "history",
    "comorbidities",
    "results",
    "question",
    "presentation",
    "gestational_weeks",
    "gestational_days",
    "expected_term",
    "pregnancy_history",
    "fetal_findings",
    "investigations",
    "couple_wishes",
    "termination_attestation_requested",
]


def case_create(*, patient, committee: Committee, by: Actor, **fields) -> Case:
    """A draft case of ``patient``, by a doctor who may open the patient's record."""
    may.require(
        by,
        lambda user: may.may_create_case(user=user, patient=patient),
        _("Only a doctor of the patient's care team opens a case for them."),
    )
    with transaction.atomic():
        case = Case.objects.create(
            patient=patient,
            committee=committee,
            submitted_by=by.user,
            **{k: v for k, v in fields.items() if k in CASE_FIELDS},
        )
        audit_case(
            case,
            by,
            {"rcp_case": "created", "committee": committee.pk},
            action=audit.AuditAction.CREATE,
        )
    return case


EDITABLE_STATES = (State.DRAFT, State.SUBMITTED, State.POSTPONED, State.ON_AGENDA)


def case_update(*, case: Case, revision: int, by: Actor, studies=None, **fields) -> Case:
    """Save the form's fields if nobody saved since ``revision`` (else StaleEdit)."""
    may.require(
        by,
        lambda user: may.may_edit_case(user=user, case=case),
        _("Only the submitting doctor or a coordinator edits the case."),
    )
    if case.state not in EDITABLE_STATES:
        raise RcpError(_("The case was discussed: its data can no longer change."))
    changes = {k: v for k, v in fields.items() if k in CASE_FIELDS}
    with transaction.atomic():
        updated = Case.objects.filter(pk=case.pk, revision=revision).update(
            revision=F("revision") + 1, **changes
        )
        if not updated:
            raise StaleEdit(
                _(
                    "Somebody else changed this case while you were editing it. Your changes "
                    "were not saved: reload the case, then apply them again."
                )
            )
        if studies is not None:
            withdrawn = set(case.studies.values_list("pk", flat=True)) - {s.pk for s in studies}
            case.studies.set(studies)
            if withdrawn and case.state != Case.State.DRAFT:
                # The committee saw these studies through the case: grants cached on them
                # (DICOMweb, fast frames, live review) end now, not when they expire.
                for user_id in case.committee.memberships.values_list(
                    "professional__user_id", flat=True
                ):
                    access_changed(user_id=user_id)
        audit_case(case, by, {"rcp_case": "edited", "fields": sorted(changes)})
    case.refresh_from_db()
    return case


def case_completeness(case: Case) -> list[str]:
    """What a case still lacks before it can enter an agenda (empty: complete)."""
    missing = []

    def need(value, message):
        if value in (None, ""):
            missing.append(message)

    need(case.question, _("The question asked to the meeting."))
    if case.committee.is_cpdpn:
        need(case.gestational_weeks, _("The gestational age."))
        need(case.fetal_findings, _("The fetal findings."))
        need(case.couple_wishes, _("The couple's wishes."))
    else:
        need(case.nature, _("The meeting nature."))
        if case.nature == NATURE_ORGAN:
            need(case.organ, _("The organ."))
        need(case.phase, _("The phase (initial or relapse)."))
        need(case.topography, _("The diagnosis (ICD-10 topography)."))
        need(case.performance_status, _("The WHO performance status."))
        need(case.presentation, _("Whether the case is to be discussed or only registered."))
        if case.phase == PHASE_INITIAL and case.nature == NATURE_ORGAN:
            for value, label in ((case.tnm_t, "T"), (case.tnm_n, "N"), (case.tnm_m, "M")):
                need(
                    value,
                    _("The TNM %(part)s.") % {"part": label},
                )
    discussed = case.committee.is_cpdpn or case.presentation != PRESENTATION_REGISTERED
    if discussed and not (case.studies.exists() or case.documents.exists()):
        missing.append(_("At least one imaging study or document to look at in the meeting."))
    return missing


def case_submit(*, case: Case, by: Actor) -> Case:
    may.require(
        by,
        lambda user: may.may_submit_case(user=user, case=case),
        _("Only the submitting doctor can do this."),
    )
    missing = case_completeness(case)
    if missing:
        raise RcpError(_("The case is not complete: ") + " ".join(missing))
    return _move(case, State.SUBMITTED, by=by, changes={"submitted_at": timezone.now()})


def _check_session(case: Case, session: Session) -> None:
    if session.committee_id != case.committee_id:
        raise RcpError(_("This session belongs to another committee."))
    if session.status in (Session.Status.HELD, Session.Status.NOT_HELD, Session.Status.CANCELLED):
        raise RcpError(_("This session is over."))


def case_put_on_agenda(*, case: Case, session: Session, by: Actor) -> Case:
    """Put on ``session``'s agenda, at its end: the chair or a coordinator only."""
    _refuse_unless_coordinating(case, by)
    _check_session(case, session)
    missing = case_completeness(case)
    if missing:
        raise RcpError(_("The case is not complete: ") + " ".join(missing))
    with transaction.atomic():
        last = Case.objects.filter(session=session).aggregate(m=Max("agenda_position"))["m"]
        return _move(
            case,
            State.ON_AGENDA,
            by=by,
            changes={"session": session, "agenda_position": (last or 0) + 1},
            session=session.pk,
        )


def agenda_reorder(*, session: Session, case_ids: list[int], by: Actor) -> None:
    may.require(
        by,
        lambda user: may.may_coordinate(user=user, committee=session.committee),
        _("Only the chair or a coordinator builds the agenda."),
    )
    on_agenda = set(Case.objects.filter(session=session).values_list("pk", flat=True))
    if len(case_ids) != len(set(case_ids)) or set(case_ids) != on_agenda:
        raise RcpError(_("The agenda changed meanwhile: reload it."))
    with transaction.atomic():
        for position, case_id in enumerate(case_ids, start=1):
            Case.objects.filter(pk=case_id).update(agenda_position=position)
        _audit_session(session, by, {"agenda": case_ids})


def case_postpone(*, case: Case, to_session: Session | None, by: Actor) -> Case:
    """Postponed to a later session (at the end of its agenda), or to none yet: the case then
    waits, postponed, for the coordinator to put it on an agenda."""
    _refuse_unless_coordinating(case, by)
    if case.state not in (State.ON_AGENDA, State.DISCUSSED):
        raise RcpError(_("Only a case on an agenda can be postponed."))
    changes = {"session": None, "agenda_position": None, "postponements": F("postponements") + 1}
    target = State.POSTPONED
    with transaction.atomic():
        if to_session is not None:
            _check_session(case, to_session)
            if to_session.pk == case.session_id:
                raise RcpError(_("Choose a later session."))
            last = Case.objects.filter(session=to_session).aggregate(m=Max("agenda_position"))
            changes.update(session=to_session, agenda_position=(last["m"] or 0) + 1)
            target = State.ON_AGENDA
        return _move(
            case,
            target,
            by=by,
            changes=changes,
            postponed_to=to_session.pk if to_session else None,
        )


def case_register(*, case: Case, by: Actor) -> Case:
    """A standard case the coordinator pre-read: registered without discussion."""
    _refuse_unless_coordinating(case, by)
    return _move(case, State.REGISTERED, by=by, changes={"presentation": PRESENTATION_REGISTERED})


def case_return_to_discussion(*, case: Case, by: Actor) -> Case:
    _refuse_unless_coordinating(case, by)
    return _move(case, State.ON_AGENDA, by=by, changes={"presentation": PRESENTATION_DISCUSSED})


# --- The session's life cycle -----------------------------------------------------------------
#
# planned -> in_progress (opened by its chair or a coordinator, on the day) -> held / not_held
# (closed by them, or the next day by Celery beat). A session is held when at least one case
# was discussed, registered or validated in it: the indicators count only those.

# A coordinator may open the meeting a little before its start (set up the room, the video).
OPEN_EARLY = dt.timedelta(minutes=60)
PRESENTED_STATES = (State.DISCUSSED, State.REGISTERED, State.VALIDATED)
# Left undecided when the session closes: back among the cases waiting for a session.
UNDECIDED_STATES = (State.ON_AGENDA, State.DISCUSSED, State.REGISTERED)


may_run_session = may.may_run_session


def session_day(session: Session) -> dt.date:
    """The session's day, in Paris (where the meeting is held)."""
    return timezone.localdate(session.starts_at)


def session_may_open_now(session: Session, *, now: dt.datetime | None = None) -> bool:
    """On the session's day (Europe/Paris), or in the hour before its start."""
    now = now or timezone.now()
    if timezone.localdate(now) == session_day(session):
        return True
    return session.starts_at - OPEN_EARLY <= now < session.starts_at


def _refuse_unless_running_it(session: Session, by: Actor, message: str) -> None:
    # Opening and closing by hand is a person's act: the portal closes only with ``automatic``.
    if by.user is None or not may.may_run_session(committee=session.committee, user=by.user):
        raise NotAllowed(message)


def session_open(*, session: Session, by: Actor) -> Session:
    """The meeting starts: its chair or a coordinator opens it, on its day."""
    _refuse_unless_running_it(
        session, by, _("Only the chair or a coordinator of the committee opens the session.")
    )
    if session.status != Session.Status.PLANNED:
        raise RcpError(
            _("The session is “%(status)s”: only a planned session can be opened.")
            % {"status": session.get_status_display()}
        )
    now = timezone.now()
    if not session_may_open_now(session, now=now):
        raise RcpError(
            _(
                "A session opens on its day only (%(day)s), at the earliest an hour before "
                "it starts."
            )
            % {"day": session_day(session).strftime("%d/%m/%Y")}
        )
    with transaction.atomic():
        opened = Session.objects.filter(pk=session.pk, status=Session.Status.PLANNED).update(
            status=Session.Status.IN_PROGRESS, opened_at=now
        )
        if not opened:
            raise StaleEdit(
                _("The session changed meanwhile (somebody opened or closed it): reload it.")
            )
        session.status, session.opened_at = Session.Status.IN_PROGRESS, now
        _audit_session(session, by, {"rcp_session": "opened"})
    return session


def session_close(*, session: Session, by: Actor, automatic: bool = False) -> Session:
    """The meeting is over: held if a case was discussed, registered or validated in it, else
    not held; attendance ends; cases left undecided wait for another session (postponed,
    counted). ``automatic``: closed by Celery beat the day after (closed_by stays empty)."""
    if not automatic:
        _refuse_unless_running_it(
            session, by, _("Only the chair or a coordinator of the committee closes the session.")
        )
    now = timezone.now()
    if session.status == Session.Status.PLANNED and timezone.localdate(now) < session_day(session):
        raise RcpError(_("The session has not taken place yet: it closes on its day or later."))
    if session.status not in (Session.Status.PLANNED, Session.Status.IN_PROGRESS):
        raise StaleEdit(_("The session changed meanwhile (somebody closed it): reload it."))
    with transaction.atomic():
        held = Case.objects.filter(session=session, state__in=PRESENTED_STATES).exists()
        status = Session.Status.HELD if held else Session.Status.NOT_HELD
        # Conditioned on the status the caller saw: closed by somebody else meanwhile, the
        # attendance, the agenda and the trail are left as the first close wrote them.
        closed = Session.objects.filter(pk=session.pk, status=session.status).update(
            status=status, closed_at=now, closed_by=None if automatic else by.user
        )
        if not closed:
            raise StaleEdit(_("The session changed meanwhile (somebody closed it): reload it."))
        session.attendances.filter(left_at__isnull=True).update(left_at=now)
        postponed = 0
        for case in Case.objects.filter(session=session, state__in=UNDECIDED_STATES).exclude(
            decisions__validated_at__isnull=False
        ):
            _move(
                case,
                State.POSTPONED,
                by=by,
                changes={
                    "session": None,
                    "agenda_position": None,
                    "postponements": F("postponements") + 1,
                },
                postponed_by_closing=session.pk,
            )
            postponed += 1
        session.status, session.closed_at = status, now
        session.closed_by = None if automatic else by.user
        _audit_session(
            session,
            by,
            {
                "rcp_session": "closed automatically" if automatic else "closed",
                "status": status,
                "postponed": postponed,
            },
        )
    return session


def sessions_close_past(*, now: dt.datetime | None = None) -> list[int]:
    """Close, the day after, every session of a past day still planned or in progress (the
    Celery beat task). Idempotent: a session closed meanwhile is skipped."""
    now = now or timezone.now()
    today_starts = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    closed = []
    for session in Session.objects.filter(
        starts_at__lt=today_starts,
        status__in=[Session.Status.PLANNED, Session.Status.IN_PROGRESS],
    ).select_related("committee"):
        try:
            session_close(session=session, by=Actor.system("rcp-beat"), automatic=True)
        except StaleEdit:
            continue  # closed by its coordinator meanwhile
        closed.append(session.pk)
    return closed


# --- Attendance and opinions -----------------------------------------------------------------


def _refuse_unless_recording_attendance(session: Session, professional: Professional, by: Actor):
    may.require(
        by,
        lambda user: may.may_record_attendance(
            session=session, user=user, professional=professional
        ),
        _("Only the professional or a coordinator records an attendance."),
    )


def attendance_arrive(
    *, session: Session, professional: Professional, mode: str, by: Actor
) -> Attendance:
    """``professional`` signs in as present. Not only members: a specialist invited to the
    meeting attends (and counts in the quorum) without joining the committee; the chair or a
    coordinator records it for them."""
    _refuse_unless_recording_attendance(session, professional, by)
    attendance, _created = Attendance.objects.update_or_create(
        session=session,
        professional=professional,
        defaults={
            "mode": mode,
            "specialty": professional.specialty,
            "arrived_at": timezone.now(),
            "left_at": None,
        },
    )
    return attendance


def attendance_leave(*, session: Session, professional: Professional, by: Actor) -> None:
    _refuse_unless_recording_attendance(session, professional, by)
    Attendance.objects.filter(session=session, professional=professional).update(
        left_at=timezone.now()
    )


def written_opinion_record(*, case: Case, professional: Professional, text: str, by: Actor):
    may.require(
        by,
        lambda user: may.may_act_on_case(user=user, case=case),
        _("Only the committee's members and the submitting doctor give an opinion."),
    )
    if professional.profession != Profession.PHYSICIAN or not professional.specialty:
        raise RcpError(_("A written opinion is given by a physician, with their specialty."))
    if case.state not in EDITABLE_STATES:
        raise RcpError(_("The case was discussed: opinions are given before the meeting."))
    with transaction.atomic():
        opinion = WrittenOpinion.objects.create(
            case=case, professional=professional, specialty=professional.specialty, text=text
        )
        audit_case(case, by, {"rcp_case": "written opinion", "specialty": professional.specialty})
    return opinion


# --- Decisions -------------------------------------------------------------------------------

DECISION_FIELDS = [
    "proposal",
    "treatment_types",
    "conforms_to_guideline",
    "non_conformity_reason",
    "trial_proposed",
    "trial_name",
    "trial_nct",
    "team_opinion",
    "termination_attested",
    "attesting_physicians",
]


def decision_draft(case: Case) -> Decision | None:
    return case.decisions.filter(validated_at__isnull=True).order_by("-version").first()


def decision_save(*, case: Case, revision: int | None, by: Actor, **fields) -> Decision:
    """Create or edit the case's draft decision; ``revision`` is the draft's revision the
    form was built on (None for a new draft)."""
    may.require(
        by,
        lambda user: may.may_record_decision(user=user, case=case),
        _("Only the committee's members record its decision."),
    )
    changes = {k: v for k, v in fields.items() if k in DECISION_FIELDS}
    if case.state not in (State.ON_AGENDA, State.DISCUSSED, State.REGISTERED, State.VALIDATED):
        raise RcpError(_("The case is not on an agenda: there is no decision to record yet."))
    withdrawn = False
    with transaction.atomic():
        # The case's row is the lock: two people starting the first proposal at once make one
        # draft, and the second is told (not a duplicate version refused by the database).
        Case.objects.select_for_update().only("pk").get(pk=case.pk)
        draft = decision_draft(case)
        if draft is None:
            if revision is not None:
                raise StaleEdit(_("The decision was validated meanwhile: reload the case."))
            if case.decisions.filter(validated_at__isnull=False).exists():
                raise RcpError(_("The decision is validated: make a new version with a reason."))
            draft = Decision.objects.create(case=case, version=1, created_by=by.user, **changes)
        else:
            withdrawn = without_quorum_pending(draft)
            # An edit withdraws a pending validation without quorum: the second validator
            # would confirm a text the first did not see.
            withdraw = {"validated_by": None, "without_quorum_reason": ""} if withdrawn else {}
            updated = Decision.objects.filter(pk=draft.pk, revision=revision).update(
                revision=F("revision") + 1, updated_at=timezone.now(), **changes, **withdraw
            )
            if not updated:
                raise StaleEdit(
                    _(
                        "Somebody else changed this decision while you were editing it. Your "
                        "text was not saved: copy it, reload, and apply it again."
                    )
                )
            draft.refresh_from_db()
        detail = {"rcp_decision": draft.version, "fields": sorted(changes)}
        if withdrawn:
            detail["without_quorum"] = "withdrawn by the edit"
        if not _discussed_in_meeting(case, by=by, **detail):
            if case.state == State.ON_AGENDA:
                # Written before the meeting: a prepared proposal, the case still waits on
                # the agenda (and counts nowhere as discussed) until its session is open.
                detail["prepared"] = True
            audit_case(case, by, detail)
    return draft


def _discussed_in_meeting(case: Case, *, by: Actor, **detail) -> bool:
    """A case on the agenda whose decision is written or validated while its session is in
    progress was discussed by the meeting, now, whatever the author proposed: ON_AGENDA ->
    DISCUSSED (audited with ``detail``). False, nothing written, for a case in any other
    state or whose session is not in progress (a proposal prepared before the meeting)."""
    if case.state != State.ON_AGENDA:
        return False
    # Read now, not from the caller's copy: the session may have been opened since.
    in_progress = Session.objects.filter(
        pk=case.session_id, status=Session.Status.IN_PROGRESS
    ).exists()
    if not in_progress:
        return False
    _move(
        case,
        State.DISCUSSED,
        by=by,
        changes={"discussed_at": timezone.now(), "presentation": PRESENTATION_DISCUSSED},
        **detail,
    )
    return True


@dataclass(frozen=True)
class Validator:
    can_validate: bool
    reason: str = ""


def can_validate(*, case: Case, user) -> Validator:
    if not may.may_validate_decision(user=user, case=case):
        return Validator(False, _("Only the chair or a coordinator validates a decision."))
    return Validator(True)


def _quorum_refusal(q, committee: Committee) -> str:
    """What the quorum lacks, in a sentence for the validator."""
    missing = []
    if q.missing:
        missing.append(_("missing: %(specialties)s") % {"specialties": ", ".join(q.missing_labels)})
    if not committee.is_cpdpn and q.physicians < MINIMUM_PHYSICIANS:
        missing.append(
            _("%(count)d physician specialties present of the %(needed)d needed")
            % {"count": q.physicians, "needed": MINIMUM_PHYSICIANS}
        )
    return _(
        "The quorum is not reached (%(what)s): wait for the missing members, or validate "
        "without quorum with a reason and a second validator."
    ) % {"what": "; ".join(missing) or _("not enough physicians present")}


def _meeting_checks(case: Case, *, for_quorum_path: bool = False):
    """The first version of a decision is validated in its meeting, while it is in progress:
    returns the quorum of that moment for the case."""
    session = case.session
    if session is None:
        raise RcpError(_("The case is on no session: a decision is validated in its meeting."))
    session = Session.objects.select_related("committee").get(pk=session.pk)
    if session.status == Session.Status.PLANNED:
        raise RcpError(
            _(
                "The session has not been opened: its chair or a coordinator opens it on the "
                "day of the meeting, then the decision can be validated."
            )
        )
    if session.status != Session.Status.IN_PROGRESS:
        raise RcpError(_("The session is closed: the decision is validated at another session."))
    return session, session_quorum(session, case)


def _snapshot(session: Session) -> list[dict]:
    return [
        {"name": str(a.professional), "specialty": a.specialty, "mode": a.mode}
        for a in session.attendances.filter(left_at__isnull=True).select_related(
            "professional__user"
        )
    ]


def _lock(
    *, case: Case, draft: Decision, revision: int, by: Actor, fields: dict, detail: dict
) -> Decision:
    """Lock the draft (conditioned on the revision read: two validators at once, one wins),
    move the case to validated, queue its fiche and tell its doctors after commit."""
    now = timezone.now()
    validated = Decision.objects.filter(
        pk=draft.pk, revision=revision, validated_at__isnull=True
    ).update(validated_at=now, revision=F("revision") + 1, **fields)
    if not validated:
        raise StaleEdit(_("The decision changed meanwhile: check it, then validate again."))
    case = _move(
        case,
        State.VALIDATED,
        by=by,
        changes={"validated_at": now},
        decision_version=draft.version,
        **detail,
    )
    draft.refresh_from_db()
    # The fiche RCP is made in Celery, and the referring doctor and the GP are told,
    # once the validation is committed.
    from rcp.notifications import notify_decision_validated
    from rcp.pdf import request_case_pdf

    request_case_pdf(case=case, decision=draft, by=by)
    notify_decision_validated(case=case, decision=draft)
    return draft


def _current_draft(case: Case, revision: int) -> Decision:
    draft = decision_draft(case)
    if draft is None or draft.revision != revision:
        raise StaleEdit(_("The decision changed meanwhile: check it, then validate again."))
    if not draft.proposal.strip() and not draft.team_opinion.strip():
        raise RcpError(_("Write the proposal before validating it."))
    return draft


def without_quorum_pending(draft: Decision | None) -> bool:
    """A validation without quorum asked by a first validator, waiting for the second one
    (the asker is kept in ``validated_by`` until the second validator confirms)."""
    return bool(
        draft is not None
        and draft.validated_at is None
        and draft.validated_by_id is not None
        and draft.without_quorum_reason
    )


def decision_validate(*, case: Case, revision: int, by: Actor) -> Decision:
    """Lock the draft as the validated version, with the quorum and attendees of now.

    The first version is validated in its meeting: the session in progress and the quorum
    met for this case. Otherwise the explicit path is ``decision_request_without_quorum`` then
    ``decision_confirm_without_quorum`` by a second validator. A later version (after
    ``decision_amend``) keeps the meeting's quorum, attendees and flag."""
    verdict = can_validate(case=case, user=by.user)
    if not verdict.can_validate:
        raise NotAllowed(verdict.reason)
    with transaction.atomic():
        draft = _current_draft(case, revision)
        earlier = case.decisions.filter(validated_at__isnull=False).order_by("-version").first()
        if earlier is not None:
            # A new version changes the proposal, not the meeting that made it.
            fields = {
                "quorum_status": earlier.quorum_status,
                "attendees": earlier.attendees,
                "validated_without_quorum": earlier.validated_without_quorum,
                "without_quorum_reason": earlier.without_quorum_reason,
                "second_validator_id": earlier.second_validator_id,
            }
        else:
            session, q = _meeting_checks(case)
            if not q.met:
                raise RcpError(_quorum_refusal(q, case.committee))
            fields = {"quorum_status": q.status_code, "attendees": _snapshot(session)}
            # A proposal prepared before the meeting and validated as it stands: the meeting
            # discussed the case now (ON_AGENDA -> DISCUSSED, then VALIDATED in _lock).
            _discussed_in_meeting(case, by=by, rcp_decision=draft.version)
        fields["validated_by"] = by.user
        return _lock(case=case, draft=draft, revision=revision, by=by, fields=fields, detail={})


def decision_request_without_quorum(
    *, case: Case, revision: int, reason: str, by: Actor
) -> Decision:
    """First step of a validation without quorum: a chair or coordinator asks for it, with
    the reason, while the meeting is in progress. The decision waits, unlocked, for a second
    validator; an edit of the draft meanwhile withdraws the request."""
    verdict = can_validate(case=case, user=by.user)
    if not verdict.can_validate:
        raise NotAllowed(verdict.reason)
    if not reason.strip():
        raise RcpError(_("Say why the decision is validated without quorum."))
    with transaction.atomic():
        draft = _current_draft(case, revision)
        if case.decisions.filter(validated_at__isnull=False).exists():
            raise RcpError(_("A new version keeps the meeting's quorum: validate it normally."))
        _session, q = _meeting_checks(case)
        if q.met:
            raise RcpError(_("The quorum is reached: validate the decision normally."))
        # Asked in the open meeting: the case is being discussed, even if its proposal was
        # prepared before and is not edited now.
        _discussed_in_meeting(case, by=by, rcp_decision=draft.version)
        asked = Decision.objects.filter(
            pk=draft.pk, revision=revision, validated_at__isnull=True
        ).update(
            validated_by=by.user,
            without_quorum_reason=reason.strip(),
            revision=F("revision") + 1,
            updated_at=timezone.now(),
        )
        if not asked:
            raise StaleEdit(_("The decision changed meanwhile: check it, then validate again."))
        audit_case(
            case,
            by,
            {
                "rcp_decision": draft.version,
                "without_quorum": "asked",
                "reason": reason.strip(),
                "missing": list(q.missing),
            },
        )
        draft.refresh_from_db()
    return draft


def decision_confirm_without_quorum(*, case: Case, revision: int, by: Actor) -> Decision:
    """Second step: another chair or coordinator of the committee confirms; the decision is
    validated with the quorum "not reached", the flag, the reason and both validators."""
    verdict = can_validate(case=case, user=by.user)
    if not verdict.can_validate:
        raise NotAllowed(verdict.reason)
    with transaction.atomic():
        draft = _current_draft(case, revision)
        if not without_quorum_pending(draft):
            raise RcpError(_("Nobody asked to validate this decision without quorum."))
        if draft.validated_by_id == by.user.pk:
            raise RcpError(
                _(
                    "You asked for this validation without quorum: another chair or "
                    "coordinator of the committee confirms it."
                )
            )
        session, q = _meeting_checks(case)
        if q.met:
            raise RcpError(_("The quorum is reached now: validate the decision normally."))
        _discussed_in_meeting(case, by=by, rcp_decision=draft.version)  # already, as a rule
        fields = {
            "quorum_status": q.status_code,
            "attendees": _snapshot(session),
            "validated_without_quorum": True,
            "second_validator": by.user,
        }
        return _lock(
            case=case,
            draft=draft,
            revision=revision,
            by=by,
            fields=fields,
            detail={
                "without_quorum": "confirmed",
                "first_validator": draft.validated_by_id,
                "reason": draft.without_quorum_reason,
            },
        )


def decision_amend(*, case: Case, reason: str, by: Actor) -> Decision:
    """A new draft version after validation, starting from the last validated one."""
    may.require(
        by,
        lambda user: may.may_validate_decision(user=user, case=case),
        _("Only the chair or a coordinator can do this."),
    )
    if not reason.strip():
        raise RcpError(_("Say why the validated decision changes."))
    with transaction.atomic():
        # The case's row is the lock: two coordinators amending at once write one new version
        # (the second finds the first's draft), not two drafts of the same number.
        Case.objects.select_for_update().only("pk").get(pk=case.pk)
        if decision_draft(case) is not None:
            raise RcpError(_("A new version is already being written."))
        last = case.decisions.filter(validated_at__isnull=False).order_by("-version").first()
        if last is None:
            raise RcpError(_("There is no validated decision to change."))
        draft = Decision.objects.create(
            case=case,
            version=last.version + 1,
            created_by=by.user,
            change_reason=reason,
            **{name: getattr(last, name) for name in DECISION_FIELDS},
        )
        audit_case(case, by, {"rcp_decision": draft.version, "reason": reason})
    return draft


# --- Documents -------------------------------------------------------------------------------


def case_document_add(*, case: Case, kind: str, title: str, upload, by: Actor) -> CaseDocument:
    """Attach a report or letter (PDF, JPEG or PNG, checked by content, not by name)."""
    may.require(
        by,
        lambda user: may.may_edit_case(user=user, case=case),
        _("Only the submitting doctor or a coordinator adds documents."),
    )
    if case.state not in EDITABLE_STATES:
        raise RcpError(_("The case was discussed: documents can no longer be added."))
    if upload.size > DOCUMENT_MAX_BYTES:
        raise RcpError(_("This document is larger than 20 MB."))
    content_type = sniff_content_type(upload)
    if content_type is None:
        raise RcpError(_("Only PDF, JPEG and PNG documents can be attached."))
    with transaction.atomic():
        document = CaseDocument.objects.create(
            case=case,
            kind=kind,
            title=title,
            file=upload,
            content_type=content_type,
            size=upload.size,
            uploaded_by=by.user,
        )
        audit_case(case, by, {"rcp_case": "document added", "document": document.pk, "kind": kind})
    return document
