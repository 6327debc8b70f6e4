"""Where a case stands, as one sentence a doctor reads aloud ("Soumis le 12/10/2026 par …").

Used by the case page and by the patient page's RCP panel, so that both say the same thing.
The state's badge says the state once ("Soumis"); the details continue it, so the page no
longer reads "Soumis soumis par". Dates are shown in Europe/Paris.
"""

from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext as _

from rcp.models import Case


def _day(value) -> str:
    if value is None:
        return "—"
    if hasattr(value, "tzinfo"):
        value = timezone.localtime(value)
    return value.strftime("%d/%m/%Y")


def _session(session) -> str:
    return timezone.localtime(session.starts_at).strftime("%d/%m/%Y %H:%M") if session else "—"


def _who(user) -> str:
    if user is None:
        return "—"
    professional = getattr(user, "professional", None)
    return professional.display_name if professional else user.email


def case_status_details(case: Case, *, validated_decision=None) -> str:
    """What follows the state's badge ("Soumis" + " le 12/10/2026 par Dr Claire Martin").

    The badge is the state's own label (a past participle in both languages, "Submitted",
    "Soumis"), so each tail is written to continue it; together they read as one sentence.
    ``validated_decision`` names who validated. Expects ``session`` and
    ``submitted_by__professional`` loaded (select_related) and, for a validated case, the
    decision's ``validated_by__professional``: no query of its own.
    """
    State = Case.State
    state = case.state
    if state == State.DRAFT:
        # Translators: follows the state "Draft" ("Brouillon").
        return _("created on %(date)s by %(who)s") % {
            "date": _day(case.created_at),
            "who": _who(case.submitted_by),
        }
    if state == State.SUBMITTED:
        # Translators: follows the state "Submitted" ("Soumis").
        return _("on %(date)s by %(who)s") % {
            "date": _day(case.submitted_at),
            "who": _who(case.submitted_by),
        }
    if state == State.ON_AGENDA:
        # Translators: follows the state "On the agenda" ("À l'ordre du jour").
        return _("of the session of %(session)s") % {"session": _session(case.session)}
    if state == State.DISCUSSED:
        # Translators: follows the state "Discussed" ("Discuté").
        return _("at the session of %(session)s") % {"session": _session(case.session)}
    if state == State.REGISTERED:
        # Translators: follows the state "Registered" ("Enregistré").
        return _("without discussion, at the session of %(session)s") % {
            "session": _session(case.session)
        }
    if state == State.POSTPONED:
        # Translators: follows the state "Postponed" ("Reporté").
        return _("and waiting for a later session")
    if state == State.VALIDATED:
        when = validated_decision.validated_at if validated_decision else case.validated_at
        if validated_decision is not None and validated_decision.validated_by_id:
            # Translators: follows the state "Decision validated" ("Décision validée").
            return _("on %(date)s by %(who)s") % {
                "date": _day(when),
                "who": _who(validated_decision.validated_by),
            }
        # Translators: follows the state "Decision validated" ("Décision validée").
        return _("on %(date)s") % {"date": _day(when)}
    return ""


def case_status_sentence(case: Case, *, validated_decision=None) -> str:
    """The state and its details as one sentence, for plain text (lists, e-mails)."""
    details = case_status_details(case, validated_decision=validated_decision)
    return f"{case.get_state_display()} {details}".strip()


def postponement_sentence(case: Case) -> str:
    """How often the case was postponed, or "" if never (told apart from the state sentence:
    a postponed case may be on a later agenda already)."""
    if not case.postponements:
        return ""
    if case.postponements == 1:
        return _("Postponed once")
    return _("Postponed %(count)d times") % {"count": case.postponements}
