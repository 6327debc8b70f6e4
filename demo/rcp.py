"""Demo RCP: the thoracic board of CHRU Tours, the digestive board of CHR Orléans and the
CPDPN of Tours, with past sessions (validated decisions and their PDFs) and upcoming ones
whose agendas hold cases with studies attached. Seeded once: a second run changes nothing.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from demo.imaging import _patient
from imaging.models import Study
from portal.audit import Actor
from portal.models import Establishment, Professional, Specialty
from rcp import frcp, services
from rcp.models import Committee, CommitteeMember, Session

PARIS = ZoneInfo("Europe/Paris")
Role = CommitteeMember.Role

BOARDS = [
    {
        "name": "RCP thoracique — CHRU de Tours",
        "kind": Committee.Kind.ORGAN,
        "finess": "370000481",
        "organ_system": "312419003",
        "required": [
            Specialty.THORACIC_SURGERY,
            Specialty.MEDICAL_ONCOLOGY,
            Specialty.RADIOTHERAPY,
        ],
        "place": "CHRU de Tours, hôpital Bretonneau, salle de staff B2",
        "video_url": "https://visio.mirc.test/rcp-thoracique-tours",
        "weekday": 3,  # Thursday
        "members": [
            ("a.rousseau", Role.CHAIR),
            ("j.perrin", Role.COORDINATOR),
            ("c.martin", Role.MEMBER),
            ("h.bertrand", Role.MEMBER),
            ("j.moreau", Role.MEMBER),
            ("s.girard", Role.MEMBER),
            ("m.garnier", Role.MEMBER),
            ("n.faure", Role.MEMBER),
        ],
    },
    {
        "name": "RCP digestive — CHR d'Orléans",
        "kind": Committee.Kind.ORGAN,
        "finess": "450000088",
        "organ_system": "86762007",
        "required": [
            Specialty.DIGESTIVE_SURGERY,
            Specialty.MEDICAL_ONCOLOGY,
            Specialty.RADIOTHERAPY,
        ],
        "place": "CHR d'Orléans, salle de réunion du pôle digestif",
        "weekday": 1,  # Tuesday
        "members": [
            ("t.mercier", Role.CHAIR),
            ("k.haddad", Role.COORDINATOR),
            ("c.dubois", Role.MEMBER),
            ("i.lambert", Role.MEMBER),
            ("p.lefevre", Role.MEMBER),
            ("h.bertrand", Role.MEMBER),
        ],
    },
    {
        "name": "CPDPN du CHRU de Tours",
        "kind": Committee.Kind.CPDPN,
        "finess": "370000481",
        "organ_system": "",
        "required": [],
        "place": "CHRU de Tours, maternité Olympe de Gouges, salle du CPDPN",
        "video_url": "https://visio.mirc.test/cpdpn-tours",
        "weekday": 0,  # Monday
        "members": [
            ("m.petit", Role.CHAIR),
            ("j.perrin", Role.COORDINATOR),
            ("l.fontaine", Role.MEMBER),
            ("h.blanc", Role.MEMBER),
            ("a.roux", Role.MEMBER),
        ],
    },
]

THORACIC_CASE = {
    "question": "Réévaluation après chimiothérapie : place de la chirurgie ?",
    "nature": frcp.NATURE_ORGAN,
    "organ_system": "312419003",
    "organ": "MED-255",
    "phase": frcp.PHASE_INITIAL,
    "topography": "C34.3",
    "morphology": "8140/3",
    "tnm_prefix": "c",
    "tnm_t": "T2a",
    "tnm_n": "N1",
    "tnm_m": "M0",
    "performance_status": "MED-264",
    "history": "Tabagisme sevré (40 PA). HTA traitée.",
    "comorbidities": "BPCO stade 2.",
    "results": "TDM de réévaluation : nodule du lobe inférieur droit stable (11 mm).",
    "presentation": frcp.CASE_DISCUSSED,
}

PERINATAL_CASE = {
    "question": "Conduite à tenir devant un intestin hyperéchogène isolé au 2e trimestre ?",
    "gestational_weeks": 22,
    "gestational_days": 3,
    "pregnancy_history": "G2P1, grossesse spontanée, premier trimestre sans particularité.",
    "fetal_findings": "Intestin hyperéchogène isolé, biométries au 40e percentile.",
    "investigations": "Sérologie CMV demandée, caryotype proposé.",
    "couple_wishes": "Le couple souhaite une information complète avant toute décision.",
}


def _professionals() -> dict[str, Professional]:
    return {
        p.user.email.split("@")[0]: p
        for p in Professional.objects.select_related("user").filter(
            user__email__endswith="@mirc.test"
        )
    }


def _at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, 0), tzinfo=PARIS)


def _next_weekday(weekday: int, *, weeks: int = 0) -> dt.date:
    today = timezone.localdate()
    return today + dt.timedelta(days=(weekday - today.weekday()) % 7 or 7, weeks=weeks)


def _today_start() -> dt.datetime:
    """Today's session starts in 45 to 50 minutes: whenever the demo is seeded, its
    coordinator may open it at once (an hour before its start at the earliest) and it stays
    among the upcoming sessions long enough for the walks."""
    start = timezone.localtime() + dt.timedelta(minutes=50)
    return start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)


def _past_session(board, start: dt.datetime) -> Session:
    """A meeting three weeks ago, as history: planning refuses the past, so it is written as
    it was then, in progress since its start (closed once its cases are decided)."""
    return Session.objects.create(
        committee=board,
        starts_at=start,
        ends_at=start + dt.timedelta(hours=2),
        submission_deadline=start - dt.timedelta(days=2),
        place=board.place,
        video_url=board.video_url,
        status=Session.Status.IN_PROGRESS,
        opened_at=start,
    )


def _close_past(board, people, coordinator: str) -> None:
    """Close the past session: held if a case was decided in it, else not held (closed
    automatically the next day, as Celery beat does), at the time the meeting ended."""
    past = board.sessions.order_by("starts_at").first()
    held = past.cases.exists()
    services.session_close(
        session=past,
        by=Actor(user=people[coordinator].user) if held else Actor.system("rcp-beat"),
        automatic=not held,
    )
    Session.objects.filter(pk=past.pk).update(
        closed_at=past.ends_at if held else past.ends_at + dt.timedelta(hours=7)
    )


def seed(stdout=None) -> int:
    if Committee.objects.filter(name=BOARDS[0]["name"]).exists():
        return 0
    people = _professionals()
    if not people:
        return 0
    with transaction.atomic():
        boards = [_board(spec, people) for spec in BOARDS]
        _thoracic(boards[0], people)
        _digestive(boards[1], people)
        _perinatal(boards[2], people)
        for board, spec in zip(boards, BOARDS, strict=True):
            coordinator = next(key for key, role in spec["members"] if role == Role.COORDINATOR)
            _close_past(board, people, coordinator)
    if stdout is not None:
        for board in boards:
            stdout.write(f"  {board.name}: {board.sessions.count()} sessions")
    return len(boards)


def _board(spec, people) -> Committee:
    board = services.committee_create(
        by=Actor.system("seed_demo"),
        name=spec["name"],
        kind=spec["kind"],
        establishment=Establishment.objects.get(finess=spec["finess"]),
        organ_system=spec["organ_system"],
        required_specialties=[str(s) for s in spec["required"]],
        place=spec["place"],
        video_url=spec.get("video_url", ""),
        members=[(people[key], role) for key, role in spec["members"]],
    )
    # A past session (held if a case was decided in it, else not held), today's session
    # (planned: its coordinator opens it), and the next four weekly ones at 17:00.
    _past_session(board, _at(_next_weekday(spec["weekday"], weeks=-3), 17))
    services.sessions_schedule(
        by=Actor.system("seed_demo"),
        committee=board,
        first_start=_today_start(),
        duration=dt.timedelta(hours=2),
    )
    services.sessions_schedule(
        by=Actor.system("seed_demo"),
        committee=board,
        first_start=_at(_next_weekday(spec["weekday"]), 17),
        duration=dt.timedelta(hours=2),
        every="weekly",
        count=4,
    )
    return board


def _case(board, patient, doctor, studies, fields):
    """A submitted case, or None when the patient has no study to show (a partial demo)."""
    if patient is None or not studies:
        return None
    by = Actor(user=doctor.user)
    case = services.case_create(patient=patient, committee=board, by=by)
    case = services.case_update(case=case, revision=case.revision, by=by, studies=studies, **fields)
    return services.case_submit(case=case, by=by)


def _decide(case, session, people, attendees, chair, coordinator, **decision):
    if case is None:
        return
    by = Actor(user=people[coordinator].user)
    for key in attendees:
        services.attendance_arrive(
            session=session, professional=people[key], mode="in_person", by=by
        )
    services.case_put_on_agenda(case=case, session=session, by=by)
    draft = services.decision_save(case=case, revision=None, by=by, **decision)
    services.decision_validate(
        case=case, revision=draft.revision, by=Actor(user=people[chair].user)
    )


def _thoracic(board, people):
    past, today, *_ = board.sessions.order_by("starts_at")
    preop = _patient("c.martin@mirc.test", 1)
    followed = _patient("c.martin@mirc.test", 0)
    if preop is not None:
        studies = list(Study.objects.filter(patient=preop, modalities__contains="CT"))
        case = _case(
            board,
            preop,
            people["c.martin"],
            studies,
            {
                **THORACIC_CASE,
                "question": "Bilan préopératoire d'une masse hilaire gauche : opérabilité ?",
                "topography": "C34.1",
                "tnm_t": "T2b",
                "tnm_n": "N1",
                "results": "Masse hilaire gauche de 32 mm, adénopathie de la loge de Barety.",
            },
        )
        _decide(
            case,
            past,
            people,
            ["a.rousseau", "c.martin", "h.bertrand", "j.moreau", "s.girard"],
            "a.rousseau",
            "j.perrin",
            proposal="Chimiothérapie néoadjuvante (3 cycles), puis réévaluation en RCP "
            "et lobectomie si réponse.",
            treatment_types=["C15632", "387713003"],
            conforms_to_guideline=True,
        )
    if followed is not None:
        studies = list(Study.objects.filter(patient=followed, modalities__contains="CT"))
        case = _case(board, followed, people["c.martin"], studies, THORACIC_CASE)
        if case is not None:
            services.case_put_on_agenda(
                case=case, session=today, by=Actor(user=people["j.perrin"].user)
            )
    _worklist(board, people, today)


def _worklist(board, people, today):
    """What waits for the coordinator on her home page (rcp.home): a case submitted to no
    agenda yet, a draft still short of its staging, a case taken off today's agenda with no
    new date. Standard cases, only registered: no study needed."""
    doctor, coordinator = Actor(user=people["c.martin"].user), Actor(user=people["j.perrin"].user)
    registered = {**THORACIC_CASE, "presentation": frcp.CASE_REGISTERED}
    waiting, draft, postponed = (_patient("c.martin@mirc.test", rank) for rank in (6, 7, 8))
    if waiting is not None:
        case = services.case_create(patient=waiting, committee=board, by=doctor)
        case = services.case_update(case=case, revision=case.revision, by=doctor, **registered)
        services.case_submit(case=case, by=doctor)
    if draft is not None:
        case = services.case_create(patient=draft, committee=board, by=doctor)
        services.case_update(
            case=case, revision=case.revision, by=doctor, question=THORACIC_CASE["question"]
        )
    if postponed is not None:
        case = services.case_create(patient=postponed, committee=board, by=doctor)
        case = services.case_update(case=case, revision=case.revision, by=doctor, **registered)
        case = services.case_submit(case=case, by=doctor)
        case = services.case_put_on_agenda(case=case, session=today, by=coordinator)
        services.case_postpone(case=case, to_session=None, by=coordinator)


def _digestive(board, people):
    upcoming = board.sessions.order_by("starts_at")[2]  # next week's
    patient = _patient("c.dubois@mirc.test", 0)
    if patient is None:
        return
    studies = list(Study.objects.filter(patient=patient))
    case = _case(
        board,
        patient,
        people["c.dubois"],
        studies,
        {
            **THORACIC_CASE,
            "question": "Métastase pulmonaire unique d'un adénocarcinome colique : "
            "résection ou radiothérapie stéréotaxique ?",
            "organ_system": "86762007",  # système digestif
            "organ": "MED-251",  # côlon-rectum-anus
            "phase": frcp.PHASE_RELAPSE,
            "topography": "C18.7",
            "tnm_t": "",
            "tnm_n": "",
            "tnm_m": "",
        },
    )
    if case is not None:
        services.case_put_on_agenda(
            case=case, session=upcoming, by=Actor(user=people["k.haddad"].user)
        )


def _perinatal(board, people):
    """One pregnancy: the first-trimester finding was discussed at the last session, the
    second-trimester one is on today's agenda."""
    past, today, *_ = board.sessions.order_by("starts_at")
    patient = _patient("m.petit@mirc.test", 0)
    if patient is None:
        return
    first = list(Study.objects.filter(patient=patient, description__contains="1er trimestre"))
    case = _case(
        board,
        patient,
        people["m.petit"],
        first,
        {
            **PERINATAL_CASE,
            "gestational_weeks": 13,
            "gestational_days": 1,
            "fetal_findings": "Clarté nucale à 3,8 mm.",
            "question": "Clarté nucale augmentée : quel bilan proposer ?",
        },
    )
    _decide(
        case,
        past,
        people,
        ["m.petit", "l.fontaine", "h.blanc", "a.roux"],
        "m.petit",
        "j.perrin",
        team_opinion="Proposer un caryotype fœtal par biopsie de trophoblaste et une "
        "échographie de référence à 16 SA.",
    )
    second = list(Study.objects.filter(patient=patient, description__contains="2e trimestre"))
    case = _case(board, patient, people["m.petit"], second, PERINATAL_CASE)
    if case is not None:
        services.case_put_on_agenda(
            case=case, session=today, by=Actor(user=people["j.perrin"].user)
        )
