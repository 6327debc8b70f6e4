"""An RCP around the `world` personas: the thoracic board of Tours and a digestive board.

* thoracic board: the oncologist chairs, the coordinator coordinates, the surgeon and a
  radiation oncologist are members; required specialties: thoracic surgery, medical
  oncology, radiation oncology;
* digestive board (another committee): the outsider radiologist is its member;
* an upcoming session of the thoracic board, and world.patient's CT.
"""

import datetime as dt

from django.utils import timezone

from portal.audit import Actor
from portal.models import Specialty
from rcp import frcp, services
from rcp.models import Attendance, CommitteeMember, Session
from tests import builders
from tests.permission_matrix import imaged_study

COMPLETE_THORACIC = {
    "question": "Chirurgie d'emblée ou traitement néoadjuvant ?",
    "nature": frcp.NATURE_ORGAN,
    "organ_system": "312419003",  # appareil respiratoire et/ou cavité thoracique
    "organ": "MED-255",  # trachée, bronches, poumon
    "phase": frcp.PHASE_INITIAL,
    "topography": "C34.1",
    "morphology": "8140/3",
    "tnm_prefix": "c",
    "tnm_t": "T2a",
    "tnm_n": "N0",
    "tnm_m": "M0",
    "performance_status": frcp.OMS.concepts[0].code,
    "presentation": frcp.CASE_DISCUSSED,
}


def rcp_world(world):
    """Builds the committees once per world; returns ``world`` with them attached."""
    if hasattr(world, "thoracic"):
        return world
    world.radiotherapist = builders.professional(
        email="radiotherapeute@mirc.test",
        first_name="Hélène",
        last_name="Bertrand",
        specialty=Specialty.RADIOTHERAPY,
        establishment=world.tours,
    )
    Role = CommitteeMember.Role
    world.thoracic = builders.committee(
        name="RCP thoracique — CHRU de Tours",
        establishment=world.tours,
        required_specialties=[
            Specialty.THORACIC_SURGERY,
            Specialty.MEDICAL_ONCOLOGY,
            Specialty.RADIOTHERAPY,
        ],
        members=[
            (world.oncologist, Role.CHAIR),
            (world.coordinator, Role.COORDINATOR),
            (world.surgeon, Role.MEMBER),
            (world.radiotherapist, Role.MEMBER),
        ],
    )
    world.digestive = builders.committee(
        name="RCP digestive — CH de Bourges",
        establishment=world.bourges,
        members=[(world.outsider, Role.CHAIR)],
    )
    world.session, world.later_session = builders.sessions(world.thoracic, count=2)
    world.ct = imaged_study(world)["study"]
    return world


def submitted_case(world, **fields):
    """world.patient's complete thoracic case with the CT, submitted by the oncologist."""
    rcp_world(world)
    return builders.case(
        patient=world.patient,
        committee=world.thoracic,
        by=world.oncologist.user,
        studies=[world.ct],
        submit=True,
        **{**COMPLETE_THORACIC, **fields},
    )


def case_on_agenda(world, **fields):
    case = submitted_case(world, **fields)
    return services.case_put_on_agenda(
        case=case, session=world.session, by=Actor(user=world.coordinator.user)
    )


def session_day_has_come(session: Session) -> Session:
    """The session's day has come: it starts now (tests do not wait for its date; planning
    refuses the past, so the start is moved as a clock would)."""
    now = timezone.now().replace(microsecond=0)
    Session.objects.filter(pk=session.pk).update(starts_at=now, ends_at=now + dt.timedelta(hours=2))
    session.refresh_from_db()
    return session


def open_session(session: Session, *, by_user, present=()) -> Session:
    """On its day, the session opened by ``by_user`` (a chair or coordinator), with the
    professionals ``present`` seated in the room."""
    session = session_day_has_come(session)
    if session.status == Session.Status.PLANNED:
        session = services.session_open(session=session, by=Actor(user=by_user))
    for professional in present:
        services.attendance_arrive(
            session=session,
            professional=professional,
            mode=Attendance.Mode.IN_PERSON,
            by=Actor(user=by_user),
        )
    return session


def open_with_quorum(world, session: Session | None = None) -> Session:
    """The thoracic board's session (world.session by default) opened by its coordinator,
    with its quorum seated: the surgeon, the oncologist and the radiation oncologist."""
    rcp_world(world)
    return open_session(
        session or world.session,
        by_user=world.coordinator.user,
        present=(world.surgeon, world.oncologist, world.radiotherapist),
    )
