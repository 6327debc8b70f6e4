"""RCP services, told as the stories of two boards.

The thoracic cancer board of Tours requires its surgeon, a medical oncologist and a radiation
oncologist (INCa 2023); the perinatal board (CPDPN) needs its four core specialties (CSP
R2131-12). A case is written, checked for completeness, submitted, put on an agenda,
discussed or only registered, and its decision validated with the quorum of the moment; a
validated decision changes only through a new version. Concurrent edits are refused, never
merged, and every change of a case's state is written on the patient's audit trail.
"""

import contextlib
import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone, translation

from portal import audit
from portal.audit import Actor
from portal.models import AuditEvent, CareRole, Profession, Specialty
from rcp import services
from rcp.models import Attendance, Case, Committee, CommitteeMember, Decision, Session
from rcp.quorum import quorum, session_quorum
from rcp.selectors import upcoming_sessions, waiting_cases
from rcp.services import RcpError, StaleEdit
from tests import builders
from tests.conftest import client_for, make_professional
from tests.permission_matrix import imaged_study
from tests.rcp_world import open_session

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")
Role = CommitteeMember.Role
State = Case.State

SURGERY = Specialty.THORACIC_SURGERY.value
ONCOLOGY = Specialty.MEDICAL_ONCOLOGY.value
RADIOTHERAPY = Specialty.RADIOTHERAPY.value

# A right upper lobe adenocarcinoma, initial phase, cT2a N0 M0, WHO 1, to be discussed.
COMPLETE_THORACIC_CASE = {
    "nature": "ORG-117",
    "organ_system": "312419003",
    "organ": "MED-255",
    "phase": "MED-268",
    "topography": "C34.1",
    "morphology": "8140/3",
    "tnm_prefix": "c",
    "tnm_t": "T2a",
    "tnm_n": "N0",
    "tnm_m": "M0",
    "performance_status": "MED-264",
    "question": "Lobectomie ou radiothérapie stéréotaxique ?",
    "presentation": "ORG-134",
}

MISSING_QUESTION = "The question asked to the meeting."
MISSING_NATURE = "The meeting nature."
MISSING_PHASE = "The phase (initial or relapse)."
MISSING_TOPOGRAPHY = "The diagnosis (ICD-10 topography)."
MISSING_PERFORMANCE_STATUS = "The WHO performance status."
MISSING_PRESENTATION = "Whether the case is to be discussed or only registered."
MISSING_IMAGES = "At least one imaging study or document to look at in the meeting."


@pytest.fixture(autouse=True)
def _english():
    """The messages are compared in English, whatever the translations of the day."""
    with translation.override("en"):
        yield


@pytest.fixture
def world(world):
    """The shared personas, plus the two boards and the specialists they need."""
    world.radiotherapist = make_professional(
        email="radiotherapeute@mirc.test",
        first_name="Hélène",
        last_name="Garnier",
        specialty=RADIOTHERAPY,
        establishment=world.tours,
    )
    world.radiologist = make_professional(
        email="radiologue@mirc.test",
        first_name="Marc",
        last_name="Fontaine",
        specialty=Specialty.RADIOLOGY.value,
        establishment=world.tours,
    )
    world.thoracic = services.committee_create(
        by=Actor.system("tests"),
        name="RCP thoracique de Tours",
        kind=Committee.Kind.ORGAN,
        members=[
            (world.surgeon, Role.CHAIR),
            (world.coordinator, Role.COORDINATOR),
            (world.oncologist, Role.MEMBER),
            (world.radiotherapist, Role.MEMBER),
            (world.radiologist, Role.MEMBER),
        ],
        establishment=world.tours,
        organ_system="312419003",
        required_specialties=[SURGERY, ONCOLOGY, RADIOTHERAPY],
    )
    world.obstetrician = make_professional(
        email="obstetricien@mirc.test",
        first_name="Sophie",
        last_name="Bernard",
        specialty=Specialty.GYNECOLOGY_OBSTETRICS.value,
        establishment=world.tours,
    )
    world.fetal_medicine = make_professional(
        email="echographiste@mirc.test",
        first_name="Luc",
        last_name="Moreau",
        specialty=Specialty.FETAL_MEDICINE.value,
        establishment=world.tours,
    )
    world.pediatrician = make_professional(
        email="neonatologue@mirc.test",
        first_name="Anne",
        last_name="Girard",
        specialty=Specialty.PEDIATRICS_NEONATOLOGY.value,
        establishment=world.tours,
    )
    world.geneticist = make_professional(
        email="geneticien@mirc.test",
        first_name="Yves",
        last_name="Mercier",
        specialty=Specialty.GENETICS.value,
        establishment=world.tours,
    )
    world.cpdpn = services.committee_create(
        by=Actor.system("tests"),
        name="CPDPN Centre-Val de Loire",
        kind=Committee.Kind.CPDPN,
        members=[
            (world.obstetrician, Role.CHAIR),
            (world.coordinator, Role.COORDINATOR),
            (world.fetal_medicine, Role.MEMBER),
            (world.pediatrician, Role.MEMBER),
            (world.geneticist, Role.MEMBER),
        ],
        establishment=world.tours,
    )
    return world


# --- Helpers -----------------------------------------------------------------------------------


def by(professional) -> Actor:
    return Actor(user=professional.user)


def thoracic_case(world, *, with_study=True, patient=None, **fields) -> Case:
    """A complete thoracic case written by the oncologist (with a CT to look at)."""
    case = services.case_create(
        patient=patient or world.patient,
        committee=world.thoracic,
        by=by(world.oncologist),
        **{**COMPLETE_THORACIC_CASE, **fields},
    )
    if with_study:
        case.studies.add(imaged_study(world)["study"])
    return case


def submitted_case(world, **fields) -> Case:
    return services.case_submit(case=thoracic_case(world, **fields), by=by(world.oncologist))


def session_of(committee, *, days=7) -> Session:
    (session,) = services.sessions_schedule(
        by=Actor.system("tests"),
        committee=committee,
        first_start=timezone.now() + dt.timedelta(days=days),
        duration=dt.timedelta(hours=2),
    )
    return session


def case_on_agenda(world, session, **fields) -> Case:
    return services.case_put_on_agenda(
        case=submitted_case(world, **fields), session=session, by=by(world.coordinator)
    )


def arrive(session, *professionals) -> None:
    for professional in professionals:
        services.attendance_arrive(
            by=Actor.system("tests"),
            session=session,
            professional=professional,
            mode=Attendance.Mode.IN_PERSON,
        )


def opened(world, session, *present) -> Session:
    """On its day, the session opened by its coordinator, with ``present`` in the room."""
    return open_session(session, by_user=world.coordinator.user, present=present)


def quorate(world, session) -> Session:
    """Opened, with the board's quorum: surgeon, medical and radiation oncologists."""
    return opened(world, session, world.surgeon, world.oncologist, world.radiotherapist)


def discussed_case(world, session) -> tuple[Case, Decision]:
    """A case on the agenda whose draft proposal the oncologist has written."""
    case = case_on_agenda(world, session)
    decision = services.decision_save(
        case=case,
        revision=None,
        by=by(world.oncologist),
        proposal="Lobectomie supérieure droite avec curage ganglionnaire.",
        treatment_types=["chirurgie"],
        conforms_to_guideline=True,
        trial_proposed=True,
        trial_name="ESSAI-THORAX",
        trial_nct="NCT01234567",
    )
    case.refresh_from_db()
    return case, decision


def patient_trail(case):
    """The case's events on its patient's audit trail (DCM 110110, patient record)."""
    return AuditEvent.objects.filter(
        event_id="110110", patient=case.patient, object_type="rcp.case", object_id=str(case.pk)
    )


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


# --- 1. Quorum ---------------------------------------------------------------------------------


def test_the_board_has_its_quorum_with_surgeon_oncologist_and_radiation_oncologist(world):
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist, world.radiotherapist)

    found = session_quorum(session)

    assert found.met
    assert found.status_code == "ORG-126"
    assert found.physicians == 3
    assert found.missing == ()


def test_without_the_radiation_oncologist_the_quorum_is_not_met_and_says_who_is_missing(world):
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist)

    found = session_quorum(session)

    assert not found.met
    assert found.status_code == "ORG-133"
    assert found.missing == (RADIOTHERAPY,)


def test_three_specialties_are_not_enough_when_a_required_one_is_absent(world):
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist, world.radiologist)

    found = session_quorum(session)

    assert found.physicians == 3
    assert not found.met
    assert found.missing == (RADIOTHERAPY,)


def test_a_written_opinion_covers_the_absent_specialty_for_its_case_only(world):
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist, world.radiologist)
    with_opinion = thoracic_case(world, with_study=False)
    builders.care_team(world.other_patient, (world.oncologist, CareRole.REFERRING))
    other_case = thoracic_case(world, with_study=False, patient=world.other_patient)
    services.written_opinion_record(
        case=with_opinion,
        professional=world.radiotherapist,
        text="Radiothérapie stéréotaxique possible si la chirurgie est récusée.",
        by=by(world.radiotherapist),
    )

    covered = session_quorum(session, with_opinion)
    assert covered.met
    assert covered.covered_by_opinion == {RADIOTHERAPY}
    assert covered.status_code == "ORG-126"

    for uncovered in (session_quorum(session, other_case), session_quorum(session)):
        assert not uncovered.met
        assert uncovered.missing == (RADIOTHERAPY,)


def test_a_written_opinion_of_a_non_physician_does_not_cover_a_specialty(world):
    nurse = make_professional(
        email="ide.radiotherapie@mirc.test",
        first_name="Léa",
        last_name="Roux",
        profession=Profession.NURSE,
        specialty=RADIOTHERAPY,
        establishment=world.tours,
        title="Mme",
    )
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist, world.radiologist)
    case = thoracic_case(world, with_study=False)

    # Refusing the opinion outright is as good as not counting it.
    with contextlib.suppress(RcpError):
        services.written_opinion_record(
            case=case, professional=nurse, text="Pas d'objection.", by=by(nurse)
        )

    found = session_quorum(session, case)
    assert not found.met
    assert found.missing == (RADIOTHERAPY,)


def test_two_physicians_of_the_same_specialty_count_once(world):
    # A cross-cutting board requires no specialty: only the "three specialties" rule applies.
    board = services.committee_create(
        by=Actor.system("tests"),
        name="RCP soins de support",
        kind=Committee.Kind.CROSS_CUTTING,
        members=[],
    )
    second_oncologist = make_professional(
        email="oncologue2@mirc.test",
        first_name="Louis",
        last_name="Petit",
        specialty=ONCOLOGY,
        establishment=world.tours,
    )
    session = session_of(board)
    arrive(session, world.oncologist, second_oncologist, world.surgeon)

    found = session_quorum(session)
    assert found.physicians == 2
    assert not found.met

    arrive(session, world.radiologist)
    assert session_quorum(session).met


def test_a_coordinator_or_a_nurse_does_not_count_as_a_physician(world):
    board = services.committee_create(
        by=Actor.system("tests"),
        name="RCP soins de support",
        kind=Committee.Kind.CROSS_CUTTING,
        members=[],
    )
    session = session_of(board)
    arrive(session, world.oncologist, world.surgeon, world.coordinator)
    assert session_quorum(session).physicians == 2
    assert not session_quorum(session).met

    # A radiotherapy nurse does not stand for the radiation oncologist the board requires.
    nurse = make_professional(
        email="ide.radiotherapie@mirc.test",
        first_name="Léa",
        last_name="Roux",
        profession=Profession.NURSE,
        specialty=RADIOTHERAPY,
        establishment=world.tours,
        title="Mme",
    )
    thoracic = session_of(world.thoracic)
    arrive(thoracic, world.oncologist, world.surgeon, nurse)
    found = session_quorum(thoracic)
    assert not found.met
    assert found.missing == (RADIOTHERAPY,)


def test_a_participant_who_left_no_longer_counts(world):
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist, world.radiotherapist)
    assert session_quorum(session).met

    services.attendance_leave(
        by=Actor.system("tests"), session=session, professional=world.radiotherapist
    )
    found = session_quorum(session)
    assert not found.met
    assert found.missing == (RADIOTHERAPY,)

    arrive(session, world.radiotherapist)  # back in the room
    assert session_quorum(session).met


def test_a_perinatal_board_needs_its_four_core_specialties(world):
    session = session_of(world.cpdpn)
    arrive(session, world.obstetrician, world.fetal_medicine, world.pediatrician)

    three = session_quorum(session)
    assert not three.met
    assert three.missing == (Specialty.GENETICS.value,)
    assert three.status_code == "ORG-133"

    arrive(session, world.geneticist)
    four = session_quorum(session)
    assert four.met
    assert four.status_code == "ORG-126"


def test_the_quorum_of_a_list_of_people_present(world):
    physician = Profession.PHYSICIAN.value
    met = quorum(
        committee=world.thoracic,
        present=[(physician, SURGERY), (physician, ONCOLOGY), (physician, RADIOTHERAPY)],
    )
    assert (met.met, met.status_code) == (True, "ORG-126")

    not_met = quorum(
        committee=world.thoracic,
        present=[(physician, SURGERY), (physician, ONCOLOGY), ("coordinateur", RADIOTHERAPY)],
    )
    assert (not_met.met, not_met.status_code, not_met.missing) == (
        False,
        "ORG-133",
        (RADIOTHERAPY,),
    )

    covered = quorum(
        committee=world.thoracic,
        present=[(physician, SURGERY), (physician, ONCOLOGY), (physician, "radiologie")],
        opinions=[RADIOTHERAPY],
    )
    assert covered.met


# --- 2. Completeness ---------------------------------------------------------------------------


def test_a_fresh_cancer_case_lists_everything_it_lacks(world):
    case = services.case_create(
        patient=world.patient, committee=world.thoracic, by=by(world.oncologist)
    )

    assert services.case_completeness(case) == [
        MISSING_QUESTION,
        MISSING_NATURE,
        MISSING_PHASE,
        MISSING_TOPOGRAPHY,
        MISSING_PERFORMANCE_STATUS,
        MISSING_PRESENTATION,
        MISSING_IMAGES,
    ]


def test_an_initial_organ_case_needs_t_n_and_m(world):
    case = thoracic_case(world, tnm_t="", tnm_n="", tnm_m="")

    missing = services.case_completeness(case)

    assert len(missing) == 3
    for part in ("T", "N", "M"):
        assert f"The TNM {part}." in missing

    relapse = thoracic_case(world, phase="MED-244", tnm_t="", tnm_n="", tnm_m="")
    assert services.case_completeness(relapse) == []


def test_a_registered_case_needs_no_study_but_a_discussed_one_does(world):
    registered = thoracic_case(world, with_study=False, presentation="ORG-128")
    discussed = thoracic_case(world, with_study=False, presentation="ORG-134")

    assert services.case_completeness(registered) == []
    assert services.case_completeness(discussed) == [MISSING_IMAGES]


def test_a_perinatal_case_needs_gestational_age_fetal_findings_and_the_couples_wishes(world):
    builders.care_team(world.patient, (world.obstetrician, CareRole.REFERRING))
    case = services.case_create(
        patient=world.patient,
        committee=world.cpdpn,
        by=by(world.obstetrician),
        question="Poursuite de la grossesse ?",
    )
    case.studies.add(imaged_study(world)["study"])

    assert services.case_completeness(case) == [
        "The gestational age.",
        "The fetal findings.",
        "The couple's wishes.",
    ]

    case = services.case_update(
        case=case,
        revision=case.revision,
        by=by(world.obstetrician),
        gestational_weeks=22,
        gestational_days=3,
        fetal_findings="Cardiopathie conotroncale.",
        couple_wishes="Souhaitent un avis avant toute décision.",
    )
    assert services.case_completeness(case) == []


def test_an_incomplete_case_is_refused_with_what_it_lacks_and_stays_a_draft(world):
    case = thoracic_case(world, with_study=False, question="", performance_status="")
    revision = case.revision
    events = patient_trail(case).count()

    with pytest.raises(RcpError) as refused:
        services.case_submit(case=case, by=by(world.oncologist))

    for message in (MISSING_QUESTION, MISSING_PERFORMANCE_STATUS, MISSING_IMAGES):
        assert message in str(refused.value)
    stored = fresh(case)
    assert stored.state == State.DRAFT
    assert stored.submitted_at is None
    assert stored.revision == revision
    assert patient_trail(case).count() == events


def test_a_complete_case_with_its_ct_is_submitted(world):
    case = thoracic_case(world)

    services.case_submit(case=case, by=by(world.oncologist))

    stored = fresh(case)
    assert stored.state == State.SUBMITTED
    assert stored.submitted_at is not None
    assert list(stored.studies.all()) == [imaged_study(world)["study"]]


# --- 3. State transitions ----------------------------------------------------------------------


def test_a_submitted_case_goes_on_the_agenda_of_its_boards_session(world):
    session = session_of(world.thoracic)
    case = submitted_case(world)

    services.case_put_on_agenda(case=case, session=session, by=by(world.coordinator))

    stored = fresh(case)
    assert stored.state == State.ON_AGENDA
    assert stored.session == session
    assert stored.agenda_position == 1


def test_a_session_of_another_board_is_refused(world):
    perinatal_session = session_of(world.cpdpn)
    case = submitted_case(world)

    with pytest.raises(RcpError):
        services.case_put_on_agenda(case=case, session=perinatal_session, by=by(world.coordinator))

    stored = fresh(case)
    assert (stored.state, stored.session, stored.agenda_position) == (State.SUBMITTED, None, None)


@pytest.mark.parametrize("status", [Session.Status.HELD, Session.Status.CANCELLED])
def test_a_session_that_is_over_takes_no_more_cases(world, status):
    session = session_of(world.thoracic)
    Session.objects.filter(pk=session.pk).update(status=status)
    session.refresh_from_db()
    case = submitted_case(world)

    with pytest.raises(RcpError):
        services.case_put_on_agenda(case=case, session=session, by=by(world.coordinator))

    assert fresh(case).state == State.SUBMITTED
    assert not session.cases.exists()


def test_the_session_in_progress_is_offered_and_takes_a_case_added_during_the_meeting(world):
    def began(session, ago, **status):
        """``session`` began ``ago`` (history: planning refuses the past)."""
        start = timezone.now() - ago
        Session.objects.filter(pk=session.pk).update(
            starts_at=start, ends_at=start + dt.timedelta(hours=2), **status
        )
        return fresh(session)

    in_progress = began(opened(world, session_of(world.thoracic)), dt.timedelta(minutes=45))
    next_week = session_of(world.thoracic)
    # Over, or of a past day and never closed: not offered.
    over = [
        began(session_of(world.thoracic), dt.timedelta(hours=1), status=Session.Status.HELD),
        began(session_of(world.thoracic), dt.timedelta(hours=3), status=Session.Status.NOT_HELD),
        began(session_of(world.thoracic), dt.timedelta(days=1, hours=1)),
    ]

    offered = list(upcoming_sessions(committee=world.thoracic))

    assert offered == [in_progress, next_week]
    assert not set(over) & set(offered)
    case = services.case_put_on_agenda(
        case=submitted_case(world), session=offered[0], by=by(world.coordinator)
    )
    assert (case.state, case.session_id, case.agenda_position) == (
        State.ON_AGENDA,
        in_progress.pk,
        1,
    )


def test_agenda_positions_follow_arrival_and_the_coordinator_reorders_them(world):
    session = session_of(world.thoracic)
    first, second, third = (case_on_agenda(world, session) for _ in range(3))
    assert [fresh(c).agenda_position for c in (first, second, third)] == [1, 2, 3]

    services.agenda_reorder(
        session=session, case_ids=[third.pk, first.pk, second.pk], by=by(world.coordinator)
    )

    assert list(session.cases.order_by("agenda_position").values_list("pk", flat=True)) == [
        third.pk,
        first.pk,
        second.pk,
    ]


def test_an_agenda_order_with_a_case_of_another_session_is_refused(world):
    session, other_session = session_of(world.thoracic), session_of(world.thoracic, days=14)
    first, second = case_on_agenda(world, session), case_on_agenda(world, session)
    elsewhere = case_on_agenda(world, other_session)

    with pytest.raises(RcpError):
        services.agenda_reorder(
            session=session,
            case_ids=[second.pk, elsewhere.pk, first.pk],
            by=by(world.coordinator),
        )

    assert [fresh(c).agenda_position for c in (first, second, elsewhere)] == [1, 2, 1]


def test_an_agenda_order_that_omits_a_case_is_refused(world):
    session = session_of(world.thoracic)
    first, second, third = (case_on_agenda(world, session) for _ in range(3))

    with pytest.raises(RcpError):
        services.agenda_reorder(
            session=session, case_ids=[third.pk, second.pk], by=by(world.coordinator)
        )

    assert [fresh(c).agenda_position for c in (first, second, third)] == [1, 2, 3]


def test_a_postponed_case_joins_the_end_of_the_later_sessions_agenda(world):
    today, next_week = session_of(world.thoracic), session_of(world.thoracic, days=14)
    already_there = case_on_agenda(world, next_week)
    case = case_on_agenda(world, today)

    services.case_postpone(case=case, to_session=next_week, by=by(world.coordinator))

    stored = fresh(case)
    assert stored.state == State.ON_AGENDA
    assert stored.session == next_week
    assert stored.agenda_position == fresh(already_there).agenda_position + 1
    assert stored.postponements == 1
    assert not today.cases.exists()

    later = session_of(world.thoracic, days=21)
    services.case_postpone(case=stored, to_session=later, by=by(world.coordinator))
    assert fresh(case).postponements == 2
    assert fresh(case).session == later


def test_a_case_postponed_without_a_session_waits_among_the_cases_to_schedule(world):
    session = session_of(world.thoracic)
    case = case_on_agenda(world, session)

    services.case_postpone(case=case, to_session=None, by=by(world.coordinator))

    stored = fresh(case)
    assert stored.state == State.POSTPONED
    assert (stored.session, stored.agenda_position) == (None, None)
    assert stored.postponements == 1
    assert stored in waiting_cases(committee=world.thoracic)
    # The coordinator later puts it on an agenda.
    services.case_put_on_agenda(case=stored, session=session, by=by(world.coordinator))
    assert fresh(case).state == State.ON_AGENDA


def test_the_coordinator_registers_a_standard_case_and_may_return_it_to_discussion(world):
    session = session_of(world.thoracic)
    case = case_on_agenda(world, session)

    services.case_register(case=case, by=by(world.coordinator))
    stored = fresh(case)
    assert (stored.state, stored.presentation) == (State.REGISTERED, "ORG-128")

    services.case_return_to_discussion(case=stored, by=by(world.coordinator))
    stored = fresh(case)
    assert (stored.state, stored.presentation) == (State.ON_AGENDA, "ORG-134")
    assert (stored.session, stored.agenda_position) == (session, 1)


def test_a_draft_cannot_be_registered_and_nothing_changes(world):
    case = thoracic_case(world)
    revision, events = case.revision, patient_trail(case).count()

    with pytest.raises(RcpError):
        services.case_register(case=case, by=by(world.coordinator))

    stored = fresh(case)
    assert (stored.state, stored.presentation, stored.revision) == (
        State.DRAFT,
        "ORG-134",
        revision,
    )
    assert patient_trail(case).count() == events


def test_no_decision_is_recorded_nor_validated_before_the_case_is_on_an_agenda(world):
    case = thoracic_case(world)
    events = patient_trail(case).count()

    with pytest.raises(RcpError):
        services.decision_save(
            case=case, revision=None, by=by(world.oncologist), proposal="Lobectomie."
        )
    with pytest.raises(RcpError):
        services.decision_validate(case=case, revision=1, by=by(world.surgeon))

    assert fresh(case).state == State.DRAFT
    assert not case.decisions.exists()
    assert patient_trail(case).count() == events


def test_every_transition_is_written_on_the_patients_audit_trail(world):
    session, later = session_of(world.thoracic), session_of(world.thoracic, days=14)
    case = thoracic_case(world)
    trail = patient_trail(case)
    assert trail.count() == 1  # the creation

    steps = [
        (lambda: services.case_submit(case=case, by=by(world.oncologist)), 1),
        (
            lambda: services.case_put_on_agenda(
                case=case, session=session, by=by(world.coordinator)
            ),
            1,
        ),
        # Postponed straight onto the later agenda: one event.
        (lambda: services.case_postpone(case=case, to_session=later, by=by(world.coordinator)), 1),
        (lambda: services.case_register(case=case, by=by(world.coordinator)), 1),
        (lambda: services.case_return_to_discussion(case=case, by=by(world.coordinator)), 1),
        # Postponed with no session yet.
        (lambda: services.case_postpone(case=case, to_session=None, by=by(world.coordinator)), 1),
    ]
    for step, transitions in steps:
        before = trail.count()
        step()
        assert trail.count() == before + transitions

    assert trail.count() == 1 + 6
    assert set(trail.values_list("patient", flat=True)) == {world.patient.pk}
    assert trail.filter(actor=world.coordinator.user).count() == 5


# --- 4. Decisions ------------------------------------------------------------------------------


def test_the_first_proposal_in_the_open_session_creates_a_draft_and_the_case_becomes_discussed(
    world,
):
    session = opened(world, session_of(world.thoracic))
    case = case_on_agenda(world, session)
    assert not case.decisions.exists()

    decision = services.decision_save(
        case=case, revision=None, by=by(world.oncologist), proposal="Lobectomie."
    )

    assert (decision.version, decision.proposal, decision.validated_at) == (1, "Lobectomie.", None)
    stored = fresh(case)
    assert stored.state == State.DISCUSSED
    assert stored.discussed_at is not None
    assert patient_trail(case).latest("pk").detail["rcp_case"] == "on_agenda -> discussed"


def test_a_proposal_written_before_the_meeting_is_prepared_and_the_case_stays_on_the_agenda(
    world,
):
    # Next week's session, not opened: the oncologist prepares the proposal.
    session = session_of(world.thoracic)
    case = case_on_agenda(world, session)

    draft = services.decision_save(
        case=case, revision=None, by=by(world.oncologist), proposal="Lobectomie."
    )
    services.decision_save(
        case=case, revision=draft.revision, by=by(world.surgeon), proposal="Lobectomie, curage."
    )

    stored = fresh(case)
    assert (stored.state, stored.discussed_at) == (State.ON_AGENDA, None)
    assert fresh(draft).proposal == "Lobectomie, curage."
    # Both saves are on the patient's trail, as prepared, without any change of state.
    saves = patient_trail(case).filter(detail__rcp_decision=1)
    assert saves.count() == 2
    assert all(event.detail.get("prepared") for event in saves)
    assert not patient_trail(case).filter(detail__rcp_case="on_agenda -> discussed").exists()
    # The case page still says it waits on the agenda, not that it was discussed.
    page = client_for(world.oncologist.user).get(reverse("rcp-case", args=[case.pk]))
    assert 'class="state state-on_agenda" data-testid="case-state"' in page.content.decode()


def test_the_prepared_proposal_is_discussed_when_edited_in_the_open_session(world):
    session = session_of(world.thoracic)
    case = case_on_agenda(world, session)
    draft = services.decision_save(
        case=case, revision=None, by=by(world.oncologist), proposal="Lobectomie."
    )
    session = opened(world, session)

    services.decision_save(
        case=fresh(case),
        revision=draft.revision,
        by=by(world.surgeon),
        proposal="Lobectomie, curage.",
    )

    stored = fresh(case)
    assert stored.state == State.DISCUSSED
    assert stored.discussed_at >= fresh(session).opened_at


def test_a_prepared_proposal_validated_as_it_stands_in_the_meeting_is_discussed_then_validated(
    world,
):
    session = session_of(world.thoracic)
    case, draft = discussed_case(world, session)  # prepared a week before
    assert case.state == State.ON_AGENDA
    session = quorate(world, session)

    services.decision_validate(case=fresh(case), revision=draft.revision, by=by(world.surgeon))

    stored = fresh(case)
    assert stored.state == State.VALIDATED
    assert fresh(session).opened_at <= stored.discussed_at <= stored.validated_at
    assert fresh(draft).is_locked
    # The trail tells the meeting as it happened: discussed, then validated.
    moves = [
        e.detail["rcp_case"] for e in patient_trail(case).order_by("pk") if "rcp_case" in e.detail
    ]
    assert moves[-2:] == ["on_agenda -> discussed", "discussed -> validated"]


def test_a_prepared_proposal_asked_without_quorum_in_the_meeting_makes_the_case_discussed(world):
    session = session_of(world.thoracic)
    case, draft = discussed_case(world, session)
    opened(world, session, world.surgeon)

    asked = services.decision_request_without_quorum(
        case=fresh(case), revision=draft.revision, reason="Urgence.", by=by(world.coordinator)
    )
    services.decision_confirm_without_quorum(
        case=fresh(case), revision=asked.revision, by=by(world.surgeon)
    )

    stored = fresh(case)
    assert stored.state == State.VALIDATED and stored.discussed_at is not None


def test_a_session_closed_with_only_prepared_proposals_was_not_held(world):
    session = session_of(world.thoracic)
    case, _draft = discussed_case(world, session)  # prepared, never taken up in the meeting
    session = opened(world, session)

    closed = services.session_close(session=fresh(session), by=by(world.coordinator))

    assert closed.status == Session.Status.NOT_HELD
    stored = fresh(case)
    assert (stored.state, stored.discussed_at, stored.postponements) == (
        State.POSTPONED,
        None,
        1,
    )
    # The prepared proposal waits for the next session.
    assert services.decision_draft(stored).proposal.startswith("Lobectomie")


def test_the_second_of_two_concurrent_proposal_edits_is_refused_and_the_first_kept(world):
    case, decision = discussed_case(world, session_of(world.thoracic))
    loaded_by_oncologist = loaded_by_surgeon = decision.revision

    services.decision_save(
        case=case,
        revision=loaded_by_oncologist,
        by=by(world.oncologist),
        proposal="Chimiothérapie néoadjuvante puis lobectomie.",
    )
    with pytest.raises(StaleEdit):
        services.decision_save(
            case=case,
            revision=loaded_by_surgeon,
            by=by(world.surgeon),
            proposal="Lobectomie d'emblée.",
        )

    assert fresh(decision).proposal == "Chimiothérapie néoadjuvante puis lobectomie."


def test_two_people_starting_the_first_proposal_at_once_make_one_draft(world):
    case = case_on_agenda(world, session_of(world.thoracic))
    services.decision_save(case=case, revision=None, by=by(world.oncologist), proposal="A.")

    with pytest.raises(StaleEdit):
        services.decision_save(case=case, revision=None, by=by(world.surgeon), proposal="B.")

    assert list(case.decisions.values_list("proposal", flat=True)) == ["A."]


def test_the_second_of_two_concurrent_case_edits_is_refused_and_the_first_kept(world):
    case = thoracic_case(world)
    oncologist_form, surgeon_form = fresh(case), fresh(case)

    services.case_update(
        case=oncologist_form,
        revision=oncologist_form.revision,
        by=by(world.oncologist),
        tnm_n="N1",
    )
    with pytest.raises(StaleEdit):
        services.case_update(
            case=surgeon_form,
            revision=surgeon_form.revision,
            by=by(world.surgeon),
            tnm_n="N2",
            question="Pneumonectomie ?",
        )

    stored = fresh(case)
    assert (stored.tnm_n, stored.question) == ("N1", COMPLETE_THORACIC_CASE["question"])


def test_a_transition_made_meanwhile_makes_the_doctors_open_form_stale(world):
    session = session_of(world.thoracic)
    case = submitted_case(world)
    doctors_form = fresh(case)

    services.case_put_on_agenda(case=fresh(case), session=session, by=by(world.coordinator))
    with pytest.raises(StaleEdit):
        services.case_update(
            case=doctors_form,
            revision=doctors_form.revision,
            by=by(world.oncologist),
            performance_status="MED-266",
        )

    stored = fresh(case)
    assert stored.performance_status == COMPLETE_THORACIC_CASE["performance_status"]
    assert stored.state == State.ON_AGENDA


@pytest.mark.parametrize("who", ["oncologist", "gp", "obstetrician"])
def test_only_this_boards_chair_or_coordinator_validates(world, who):
    # The oncologist is a plain member, the GP is not a member, the obstetrician chairs
    # another board.
    case, decision = discussed_case(world, quorate(world, session_of(world.thoracic)))

    with pytest.raises(RcpError):
        services.decision_validate(
            case=case, revision=decision.revision, by=by(getattr(world, who))
        )

    assert fresh(decision).validated_at is None
    assert fresh(case).state == State.DISCUSSED


def test_the_chair_validates_with_the_quorum_and_the_people_present_at_that_moment(world):
    session = quorate(world, session_of(world.thoracic))
    case, decision = discussed_case(world, session)

    validated = services.decision_validate(
        case=case, revision=decision.revision, by=by(world.surgeon)
    )

    assert validated.is_locked
    assert validated.validated_by == world.surgeon.user
    assert validated.quorum_status == "ORG-126"
    assert sorted(a["specialty"] for a in validated.attendees) == sorted(
        [SURGERY, ONCOLOGY, RADIOTHERAPY]
    )
    assert {a["name"] for a in validated.attendees} == {
        str(world.surgeon),
        str(world.oncologist),
        str(world.radiotherapist),
    }
    stored = fresh(case)
    assert stored.state == State.VALIDATED
    assert stored.validated_at == validated.validated_at

    # Who leaves afterwards does not rewrite the minutes.
    services.attendance_leave(
        by=Actor.system("tests"), session=session, professional=world.radiotherapist
    )
    assert fresh(decision).quorum_status == "ORG-126"
    assert len(fresh(decision).attendees) == 3


def test_without_the_quorum_validation_is_refused_and_says_who_is_missing(world):
    session = opened(world, session_of(world.thoracic), world.surgeon, world.oncologist)
    case, decision = discussed_case(world, session)
    events = patient_trail(case).count()

    with pytest.raises(RcpError, match="quorum is not reached.*Radiation oncology"):
        services.decision_validate(case=case, revision=decision.revision, by=by(world.coordinator))

    assert fresh(decision).validated_at is None
    assert fresh(case).state == State.DISCUSSED
    assert patient_trail(case).count() == events


def test_the_coordinator_asks_and_the_chair_confirms_a_validation_without_quorum(world):
    session = opened(world, session_of(world.thoracic), world.surgeon, world.oncologist)
    case, decision = discussed_case(world, session)

    asked = services.decision_request_without_quorum(
        case=case,
        revision=decision.revision,
        reason="Radiothérapeute absente, décision urgente.",
        by=by(world.coordinator),
    )
    # Asked, not validated: the decision waits for the second validator.
    assert asked.validated_at is None
    assert fresh(case).state == State.DISCUSSED
    validated = services.decision_confirm_without_quorum(
        case=case, revision=asked.revision, by=by(world.surgeon)
    )

    assert validated.is_locked
    assert validated.quorum_status == "ORG-133"
    assert validated.validated_without_quorum is True
    assert validated.without_quorum_reason == "Radiothérapeute absente, décision urgente."
    assert validated.validated_by == world.coordinator.user
    assert validated.second_validator == world.surgeon.user
    assert len(validated.attendees) == 2
    assert fresh(case).state == State.VALIDATED
    # Both steps are on the patient's trail, with the reason and the two validators.
    details = [e.detail for e in patient_trail(case).order_by("pk")]
    assert {"without_quorum": "asked"}.items() <= details[-2].items()
    assert details[-1]["without_quorum"] == "confirmed"
    assert details[-1]["first_validator"] == world.coordinator.user.pk


def test_the_first_validator_cannot_be_the_second(world):
    session = opened(world, session_of(world.thoracic), world.surgeon, world.oncologist)
    case, decision = discussed_case(world, session)
    asked = services.decision_request_without_quorum(
        case=case, revision=decision.revision, reason="Urgence.", by=by(world.coordinator)
    )

    with pytest.raises(RcpError, match="another chair or coordinator"):
        services.decision_confirm_without_quorum(
            case=case, revision=asked.revision, by=by(world.coordinator)
        )
    with pytest.raises(RcpError, match="Only the chair or a coordinator"):
        services.decision_confirm_without_quorum(
            case=case, revision=asked.revision, by=by(world.oncologist)
        )

    assert fresh(decision).validated_at is None
    assert fresh(case).state == State.DISCUSSED


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_validation_without_quorum_needs_a_reason(world, reason):
    session = opened(world, session_of(world.thoracic), world.surgeon)
    case, decision = discussed_case(world, session)

    with pytest.raises(RcpError, match="Say why"):
        services.decision_request_without_quorum(
            case=case, revision=decision.revision, reason=reason, by=by(world.coordinator)
        )

    assert fresh(decision).without_quorum_reason == ""
    assert fresh(decision).validated_by is None


def test_with_the_quorum_there_is_no_validation_without_it(world):
    session = quorate(world, session_of(world.thoracic))
    case, decision = discussed_case(world, session)

    with pytest.raises(RcpError, match="validate the decision normally"):
        services.decision_request_without_quorum(
            case=case, revision=decision.revision, reason="Urgence.", by=by(world.coordinator)
        )


def test_an_edit_of_the_proposal_withdraws_a_pending_validation_without_quorum(world):
    session = opened(world, session_of(world.thoracic), world.surgeon)
    case, decision = discussed_case(world, session)
    asked = services.decision_request_without_quorum(
        case=case, revision=decision.revision, reason="Urgence.", by=by(world.coordinator)
    )

    edited = services.decision_save(
        case=case, revision=asked.revision, by=by(world.oncologist), proposal="Autre chose."
    )

    # The second validator would otherwise confirm a text the first never saw.
    assert (edited.validated_by, edited.without_quorum_reason) == (None, "")
    with pytest.raises(RcpError, match="Nobody asked"):
        services.decision_confirm_without_quorum(
            case=case, revision=edited.revision, by=by(world.surgeon)
        )
    assert fresh(decision).validated_at is None


def test_no_validation_before_the_session_is_opened(world):
    # Quorum seated, but the session is planned for next week and nobody opened it: the
    # proposal is only prepared.
    session = session_of(world.thoracic)
    arrive(session, world.surgeon, world.oncologist, world.radiotherapist)
    case, decision = discussed_case(world, session)
    events = patient_trail(case).count()

    for attempt in (
        lambda: services.decision_validate(
            case=case, revision=decision.revision, by=by(world.surgeon)
        ),
        lambda: services.decision_request_without_quorum(
            case=case, revision=decision.revision, reason="Urgence.", by=by(world.surgeon)
        ),
    ):
        with pytest.raises(RcpError, match="has not been opened"):
            attempt()

    assert fresh(decision).validated_at is None
    assert fresh(case).state == State.ON_AGENDA
    assert patient_trail(case).count() == events


def test_an_empty_proposal_is_not_validated(world):
    case = case_on_agenda(world, quorate(world, session_of(world.thoracic)))
    decision = services.decision_save(
        case=case, revision=None, by=by(world.oncologist), proposal="   "
    )

    with pytest.raises(RcpError):
        services.decision_validate(case=case, revision=decision.revision, by=by(world.surgeon))

    assert fresh(decision).validated_at is None
    assert fresh(case).state == State.DISCUSSED


def test_a_registered_case_is_validated_without_being_discussed(world):
    case = case_on_agenda(world, quorate(world, session_of(world.thoracic)))
    services.case_register(case=case, by=by(world.coordinator))
    decision = services.decision_save(
        case=case, revision=None, by=by(world.coordinator), proposal="Lobectomie (référentiel)."
    )
    assert fresh(case).state == State.REGISTERED
    assert fresh(case).discussed_at is None

    services.decision_validate(case=case, revision=decision.revision, by=by(world.coordinator))

    assert fresh(case).state == State.VALIDATED
    assert fresh(decision).is_locked


def test_the_case_data_is_frozen_once_discussed(world):
    case, _decision = discussed_case(world, opened(world, session_of(world.thoracic)))

    with pytest.raises(RcpError):
        services.case_update(
            case=case, revision=case.revision, by=by(world.oncologist), tnm_m="M1a"
        )

    assert fresh(case).tnm_m == "M0"


def test_a_validated_decision_cannot_be_edited_without_a_new_version(world):
    case, decision = discussed_case(world, quorate(world, session_of(world.thoracic)))
    services.decision_validate(case=case, revision=decision.revision, by=by(world.surgeon))
    validated = fresh(decision)

    for revision in (None, decision.revision, validated.revision):
        with pytest.raises(RcpError):
            services.decision_save(
                case=case, revision=revision, by=by(world.oncologist), proposal="Autre chose."
            )

    assert fresh(decision).proposal == validated.proposal
    assert case.decisions.count() == 1


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_new_version_needs_a_reason(world, reason):
    case, decision = discussed_case(world, quorate(world, session_of(world.thoracic)))
    services.decision_validate(case=case, revision=decision.revision, by=by(world.surgeon))

    with pytest.raises(RcpError):
        services.decision_amend(case=case, reason=reason, by=by(world.surgeon))

    assert case.decisions.count() == 1


def test_a_new_version_starts_from_the_validated_one_which_stays_as_it_was(world):
    session = quorate(world, session_of(world.thoracic))
    case, decision = discussed_case(world, session)
    services.decision_validate(case=case, revision=decision.revision, by=by(world.surgeon))
    v1 = fresh(decision)

    v2 = services.decision_amend(
        case=case, reason="Résultat de la TEP reçu après la réunion.", by=by(world.surgeon)
    )

    assert v2.version == 2
    assert v2.change_reason == "Résultat de la TEP reçu après la réunion."
    assert v2.validated_at is None
    for name in ("proposal", "treatment_types", "conforms_to_guideline", "trial_name", "trial_nct"):
        assert getattr(v2, name) == getattr(v1, name), name
    assert v2.trial_proposed is True
    with pytest.raises(RcpError):  # one new version at a time
        services.decision_amend(case=case, reason="Encore.", by=by(world.surgeon))

    v2 = services.decision_save(
        case=case,
        revision=v2.revision,
        by=by(world.oncologist),
        proposal="Chimiothérapie néoadjuvante puis lobectomie.",
    )
    services.attendance_leave(
        by=Actor.system("tests"), session=session, professional=world.radiotherapist
    )
    v2 = services.decision_validate(case=case, revision=v2.revision, by=by(world.coordinator))

    assert v2.is_locked
    # A new version changes the proposal, not the meeting that made it: its quorum and
    # attendees are the meeting's, whoever has left since.
    assert v2.quorum_status == "ORG-126"
    assert v2.attendees == v1.attendees
    unchanged = fresh(v1)
    assert unchanged.proposal == "Lobectomie supérieure droite avec curage ganglionnaire."
    assert unchanged.validated_at == v1.validated_at
    assert unchanged.validated_by == world.surgeon.user
    assert unchanged.quorum_status == "ORG-126"
    assert unchanged.attendees == v1.attendees
    stored = fresh(case)
    assert stored.state == State.VALIDATED
    assert stored.validated_at == v2.validated_at


# --- 5. Scheduling -----------------------------------------------------------------------------


def scheduled(committee):
    return list(Session.objects.filter(committee=committee).order_by("starts_at"))


def test_a_weekly_series_gives_sessions_a_week_apart_each_with_its_deadline(world):
    first = dt.datetime(2027, 1, 14, 18, 0, tzinfo=PARIS)

    services.sessions_schedule(
        by=Actor.system("tests"),
        committee=world.thoracic,
        first_start=first,
        duration=dt.timedelta(hours=2),
        every="weekly",
        count=4,
        deadline_before=dt.timedelta(days=3),
    )

    sessions = scheduled(world.thoracic)
    assert [s.starts_at for s in sessions] == [first + dt.timedelta(days=7 * n) for n in range(4)]
    assert len({s.series for s in sessions}) == 1
    assert sessions[0].series is not None
    for session in sessions:
        assert session.submission_deadline == session.starts_at - dt.timedelta(days=3)
        assert session.ends_at == session.starts_at + dt.timedelta(hours=2)


def test_a_weekly_meeting_keeps_its_paris_time_when_the_clocks_change(world):
    # Summer time ends on 31 October 2027.
    first = dt.datetime(2027, 10, 21, 18, 0, tzinfo=PARIS)

    services.sessions_schedule(
        by=Actor.system("tests"),
        committee=world.thoracic,
        first_start=first,
        duration=dt.timedelta(hours=2),
        every="weekly",
        count=3,
    )

    local = [timezone.localtime(s.starts_at, PARIS) for s in scheduled(world.thoracic)]
    assert [(m.date(), m.hour) for m in local] == [
        (dt.date(2027, 10, 21), 18),
        (dt.date(2027, 10, 28), 18),
        (dt.date(2027, 11, 4), 18),
    ]


def test_an_every_other_week_series(world):
    first = dt.datetime(2027, 1, 12, 17, 30, tzinfo=PARIS)

    services.sessions_schedule(
        by=Actor.system("tests"),
        committee=world.thoracic,
        first_start=first,
        duration=dt.timedelta(hours=1),
        every="biweekly",
        count=3,
    )

    sessions = scheduled(world.thoracic)
    assert [s.starts_at for s in sessions] == [first + dt.timedelta(days=14 * n) for n in range(3)]
    assert len({s.series for s in sessions}) == 1
    assert [s.submission_deadline for s in sessions] == [
        s.starts_at - dt.timedelta(days=2) for s in sessions
    ]


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        # Every first Thursday, across the new year.
        (
            dt.datetime(2027, 11, 4, 18, 0, tzinfo=PARIS),
            [dt.date(2027, 11, 4), dt.date(2027, 12, 2), dt.date(2028, 1, 6), dt.date(2028, 2, 3)],
        ),
        # Every third Tuesday.
        (
            dt.datetime(2027, 1, 19, 18, 0, tzinfo=PARIS),
            [dt.date(2027, 1, 19), dt.date(2027, 2, 16), dt.date(2027, 3, 16)],
        ),
    ],
)
def test_a_monthly_series_keeps_the_weekday_and_the_week_of_the_month(world, first, expected):
    services.sessions_schedule(
        by=Actor.system("tests"),
        committee=world.thoracic,
        first_start=first,
        duration=dt.timedelta(hours=2),
        every="monthly",
        count=len(expected),
    )

    sessions = scheduled(world.thoracic)
    local = [timezone.localtime(s.starts_at, PARIS) for s in sessions]
    assert [m.date() for m in local] == expected
    assert {(m.hour, m.minute) for m in local} == {(18, 0)}
    assert len({s.series for s in sessions}) == 1
    assert all(s.submission_deadline == s.starts_at - dt.timedelta(days=2) for s in sessions)


def test_a_single_session_has_no_series(world):
    start = dt.datetime(2027, 1, 14, 18, 0, tzinfo=PARIS)

    created = services.sessions_schedule(
        by=Actor.system("tests"),
        committee=world.thoracic,
        first_start=start,
        duration=dt.timedelta(hours=2),
        every="once",
        count=4,
    )

    assert len(created) == 1
    (session,) = scheduled(world.thoracic)
    assert session.starts_at == start
    assert session.series is None


def test_an_unknown_recurrence_is_refused_and_nothing_is_scheduled(world):
    with pytest.raises(RcpError):
        services.sessions_schedule(
            by=Actor.system("tests"),
            committee=world.thoracic,
            first_start=dt.datetime(2027, 1, 14, 18, 0, tzinfo=PARIS),
            duration=dt.timedelta(hours=2),
            every="daily",
            count=4,
        )

    assert scheduled(world.thoracic) == []


def test_a_study_withdrawn_from_a_submitted_case_closes_the_committees_cached_grants(world):
    """The surgeon sees the CT through the case; withdrawn from it, he must lose it at once,
    not when the grants cached by the DICOMweb service and the fast path expire."""
    from portal.selectors import access_generation

    case = submitted_case(world)
    surgeon = client_for(world.surgeon.user)
    ct = imaged_study(world)
    metadata = reverse("dicomweb-study-metadata", args=[ct["study_uid"]])
    assert surgeon.get(metadata).status_code == 200  # granted, and the grant is cached
    before = access_generation(world.surgeon.user.pk)

    services.case_update(
        case=case, revision=case.revision, by=Actor(user=world.oncologist.user), studies=[]
    )
    assert access_generation(world.surgeon.user.pk) != before
    assert surgeon.get(metadata).status_code == 404


# --- 6. Two coordinators at once: one guarded, atomic step ------------------------------------


def case_history(case) -> tuple:
    """What the case's page shows of its place: state, session, position, postponements."""
    stored = fresh(case)
    return (stored.state, stored.session_id, stored.agenda_position, stored.postponements)


def at_once(*calls):
    """Run the calls from threads released together, each on its own database connection, as
    two requests would; returns what each returned or raised."""
    start = threading.Barrier(len(calls), timeout=30)
    outcomes = [None] * len(calls)

    def run(n, call):
        try:
            start.wait()
            # A new thread speaks the portal's default language (French), not the test's:
            # the messages are read in the source language, as the other tests read them.
            with translation.override("en"):
                outcomes[n] = call()
        except Exception as exc:  # noqa: BLE001 (the loser's refusal is the outcome)
            outcomes[n] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n, call)) for n, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def one_won_one_was_told(outcomes) -> None:
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1, outcomes
    assert isinstance(refused[0], StaleEdit)
    assert "changed meanwhile" in str(refused[0])


@pytest.mark.django_db(transaction=True)
def test_two_coordinators_putting_the_same_case_on_agendas_at_once_one_wins_on_postgresql(
    world,
):
    if connection.vendor != "postgresql":
        pytest.skip("runs on the production shape: DATABASE_URL=postgres://...")
    session, other = session_of(world.thoracic), session_of(world.thoracic, days=14)
    case = submitted_case(world)
    events = patient_trail(case).count()
    # Both pages were loaded while the case was submitted.
    coordinators_copy, chairs_copy = fresh(case), fresh(case)

    outcomes = at_once(
        lambda: services.case_put_on_agenda(
            case=coordinators_copy, session=session, by=by(world.coordinator)
        ),
        lambda: services.case_put_on_agenda(case=chairs_copy, session=other, by=by(world.surgeon)),
    )

    one_won_one_was_told(outcomes)
    (winner,) = [o for o in outcomes if isinstance(o, Case)]
    assert case_history(case) == (State.ON_AGENDA, winner.session_id, 1, 0)
    assert patient_trail(case).count() == events + 1


@pytest.mark.django_db(transaction=True)
def test_two_coordinators_postponing_the_same_case_at_once_postpone_it_once_on_postgresql(world):
    if connection.vendor != "postgresql":
        pytest.skip("runs on the production shape: DATABASE_URL=postgres://...")
    session, later = session_of(world.thoracic), session_of(world.thoracic, days=14)
    case = case_on_agenda(world, session)
    events = patient_trail(case).count()
    coordinators_copy, chairs_copy = fresh(case), fresh(case)

    outcomes = at_once(
        lambda: services.case_postpone(
            case=coordinators_copy, to_session=later, by=by(world.coordinator)
        ),
        lambda: services.case_postpone(case=chairs_copy, to_session=later, by=by(world.surgeon)),
    )

    one_won_one_was_told(outcomes)
    # Postponed once: on the later agenda, counted once, one event on the trail.
    assert case_history(case) == (State.ON_AGENDA, later.pk, 1, 1)
    assert patient_trail(case).count() == events + 1


def test_a_coordinator_acting_on_a_case_put_on_an_agenda_meanwhile_is_refused(world):
    session, other = session_of(world.thoracic), session_of(world.thoracic, days=14)
    case = submitted_case(world)
    chairs_page = fresh(case)  # loaded while the case was still submitted
    services.case_put_on_agenda(case=fresh(case), session=session, by=by(world.coordinator))
    seen = case_history(case), patient_trail(case).count()

    with pytest.raises(StaleEdit, match="changed meanwhile"):
        services.case_put_on_agenda(case=chairs_page, session=other, by=by(world.surgeon))

    assert (case_history(case), patient_trail(case).count()) == seen
    assert not Case.objects.filter(session=other).exists()


def test_a_second_postponement_from_an_outdated_page_is_refused_and_counts_nothing(world):
    session, later = session_of(world.thoracic), session_of(world.thoracic, days=14)
    case = case_on_agenda(world, session)
    chairs_page = fresh(case)  # still on the first session's agenda
    services.case_postpone(case=fresh(case), to_session=later, by=by(world.coordinator))
    seen = case_history(case), patient_trail(case).count()
    assert seen[0] == (State.ON_AGENDA, later.pk, 1, 1)

    with pytest.raises(StaleEdit, match="changed meanwhile"):
        services.case_postpone(case=chairs_page, to_session=None, by=by(world.surgeon))

    assert (case_history(case), patient_trail(case).count()) == seen


def test_a_session_closed_meanwhile_is_not_closed_twice(world):
    session = opened(world, session_of(world.thoracic))
    chairs_page = fresh(session)
    services.session_close(session=fresh(session), by=by(world.coordinator))
    closings = AuditEvent.objects.filter(object_type="rcp.session", object_id=str(session.pk))

    with pytest.raises(StaleEdit, match="changed meanwhile"):
        services.session_close(session=chairs_page, by=by(world.surgeon))

    assert closings.filter(detail__rcp_session="closed").count() == 1
    # Nothing was discussed in it: closed, the meeting did not take place.
    assert fresh(session).status == Session.Status.NOT_HELD


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("proposal", ["written in the meeting", "prepared before"])
def test_the_chair_and_the_coordinator_validating_at_once_validate_once_on_postgresql(
    world, proposal
):
    if connection.vendor != "postgresql":
        pytest.skip("runs on the production shape: DATABASE_URL=postgres://...")
    session = session_of(world.thoracic)
    if proposal == "prepared before":
        case, decision = discussed_case(world, session)
        quorate(world, session)
    else:
        case, decision = discussed_case(world, quorate(world, session))
    events = patient_trail(case).count()
    chairs_page, coordinators_page = fresh(case), fresh(case)

    outcomes = at_once(
        lambda: services.decision_validate(
            case=chairs_page, revision=decision.revision, by=by(world.surgeon)
        ),
        lambda: services.decision_validate(
            case=coordinators_page, revision=decision.revision, by=by(world.coordinator)
        ),
    )

    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], StaleEdit), outcomes
    assert fresh(case).state == State.VALIDATED
    assert fresh(decision).revision == decision.revision + 1
    # Validated once (and a prepared proposal's case discussed once, by the meeting).
    moves = 1 if proposal == "written in the meeting" else 2
    assert patient_trail(case).count() == events + moves


@pytest.mark.parametrize("step", ["submit", "register"])
def test_a_state_change_whose_audit_fails_is_undone(world, monkeypatch, step):
    session = session_of(world.thoracic)
    case = case_on_agenda(world, session) if step == "register" else thoracic_case(world)
    seen = case_history(case), patient_trail(case).count()

    def trail_unavailable(**kwargs):
        raise RuntimeError("audit trail unavailable")

    monkeypatch.setattr(audit, "record", trail_unavailable)
    with pytest.raises(RuntimeError):
        if step == "register":
            services.case_register(case=fresh(case), by=by(world.coordinator))
        else:
            services.case_submit(case=fresh(case), by=by(world.oncologist))
    monkeypatch.undo()

    # No change without its trace: the case is where it was.
    assert (case_history(case), patient_trail(case).count()) == seen
