"""Quorum rules of the multidisciplinary meetings (HAS 2014, INCa 2023, CSP R2131-12).

* A cancer board needs at least three physicians of different specialties present, and the
  specialties the board requires (for an organ board: the surgeon of the organ, a medical
  oncologist and a radiation oncologist, set per committee).
* A CPDPN case counts only with its four core specialties: obstetrics-gynecology, fetal
  ultrasound, pediatrics-neonatology, medical genetics.
* A required specialty that is absent may be covered, for one case, by a written opinion
  recorded before the meeting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portal.models import Profession, Specialty
from rcp.frcp import QUORUM_NOT_REACHED as QUORUM_NOT_MET
from rcp.frcp import QUORUM_REACHED as QUORUM_MET
from rcp.models import CPDPN_CORE_SPECIALTIES, Attendance, Case, Committee, Session

MINIMUM_PHYSICIANS = 3


@dataclass(frozen=True)
class Quorum:
    met: bool
    physicians: int  # physicians present, one per specialty counted
    specialties_present: frozenset[str]
    required: tuple[str, ...]
    covered_by_opinion: frozenset[str] = field(default_factory=frozenset)
    missing: tuple[str, ...] = ()

    @property
    def status_code(self) -> str:
        return QUORUM_MET if self.met else QUORUM_NOT_MET

    @property
    def missing_labels(self) -> list[str]:
        return [specialty_label(code) for code in self.missing]

    @property
    def covered_labels(self) -> list[str]:
        return sorted(specialty_label(code) for code in self.covered_by_opinion)


def specialty_label(code: str) -> str:
    try:
        return str(Specialty(code).label)
    except ValueError:
        return code


def required_specialties(committee: Committee) -> tuple[str, ...]:
    if committee.is_cpdpn:
        return tuple(str(s) for s in CPDPN_CORE_SPECIALTIES)
    return tuple(committee.required_specialties or ())


def quorum(*, committee: Committee, present: list[tuple[str, str]], opinions=()) -> Quorum:
    """The quorum of ``present`` (profession, specialty) pairs, with the specialties covered
    by written opinions for the case at hand."""
    physician_specialties = {
        specialty for profession, specialty in present if profession == Profession.PHYSICIAN
    }
    physician_specialties.discard("")
    required = required_specialties(committee)
    covered = {s for s in opinions if s not in physician_specialties}
    missing = tuple(s for s in required if s not in physician_specialties | covered)
    enough = committee.is_cpdpn or len(physician_specialties) >= MINIMUM_PHYSICIANS
    return Quorum(
        met=enough and not missing,
        physicians=len(physician_specialties),
        specialties_present=frozenset(physician_specialties),
        required=required,
        covered_by_opinion=frozenset(covered & set(required)),
        missing=missing,
    )


def session_attendance(session: Session) -> list[tuple[str, str]]:
    return list(
        Attendance.objects.filter(session=session, left_at__isnull=True).values_list(
            "professional__profession", "specialty"
        )
    )


def session_quorum(session: Session, case: Case | None = None) -> Quorum:
    """The quorum now, for the session (and a case, whose written opinions count)."""
    opinions = []
    # A CPDPN case counts only with its four core specialties present (Agence de la
    # biomédecine): written opinions cover a missing specialty of cancer boards only.
    if case is not None and not session.committee.is_cpdpn:
        opinions = list(
            case.written_opinions.filter(professional__profession=Profession.PHYSICIAN).values_list(
                "specialty", flat=True
            )
        )
    return quorum(
        committee=session.committee, present=session_attendance(session), opinions=opinions
    )
