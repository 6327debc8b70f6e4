"""The billing records of an establishment over a period, for its billing office (the TE2 of
its experts and the RQD of its requesters, Assurance Maladie avenant 9).

The rows carry patient identities: the view that shows or exports them writes one audit
event (DCM 110106 Export) for the whole list.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from expertise.models import Act
from portal.models import Affiliation, Establishment
from portal.periods import Period

EXPORT_ACTS_PERMISSION = "expertise.export_acts"


def previous_month(today: dt.date | None = None) -> Period:
    """The whole calendar month before ``today``'s (Europe/Paris)."""
    end = (today or timezone.localdate()).replace(day=1) - dt.timedelta(days=1)
    return Period(start=end.replace(day=1), end=end)


def affiliated_establishments(user) -> QuerySet[Establishment]:
    """The establishments ``user`` works for: the only ones whose acts they may export."""
    if not getattr(user, "is_authenticated", False):
        return Establishment.objects.none()
    return Establishment.objects.filter(affiliations__professional__user=user)


def default_establishment(user) -> Establishment | None:
    """The user's primary establishment (else the first by name): the form's first choice."""
    affiliation = (
        Affiliation.objects.filter(professional__user=user)
        .select_related("establishment")
        .order_by("-is_primary", "establishment__name", "pk")
        .first()
    )
    return affiliation.establishment if affiliation else None


def acts_of(*, establishment: Establishment, period: Period) -> QuerySet[Act]:
    """The acts recorded for ``establishment`` in ``period`` (act dates, both ends included),
    oldest first, with their patient."""
    return (
        Act.objects.filter(establishment=establishment, act_date__range=(period.start, period.end))
        .select_related("patient")
        # The expert's TE2 before the requester's RQD, as the avenant lists them.
        .order_by("act_date", "request_id", "-code", "pk")
    )


def acts_totals(acts: QuerySet[Act]) -> dict:
    """How many acts, how many over the annual limit, and the billable amount in cents."""
    return acts.order_by().aggregate(
        count=Count("pk"),
        over_limit=Count("pk", filter=Q(over_annual_limit=True)),
        billable_cents=Sum("amount_cents", filter=Q(over_annual_limit=False), default=0),
    )


def euros(cents: int) -> str:
    """An amount the French way, as the billing office's spreadsheet reads it: 20,00."""
    return f"{cents // 100},{cents % 100:02d}"


def euros_decimal(cents: int) -> Decimal:
    """An amount in euros, for the page to show in the reader's language."""
    return Decimal(cents) / 100


def csv_header() -> list[str]:
    return [
        _("Act date"),
        _("Code"),
        _("Amount (€)"),
        _("Professional"),
        _("Professional RPPS"),
        _("Counterpart"),
        _("Counterpart RPPS"),
        _("Patient"),
        _("INS"),
        _("INS OID"),
        _("Request"),
        _("Over the annual limit"),
    ]


def csv_row(act: Act) -> list[str]:
    """One act; the INS only for a qualified identity (ANS INS referential)."""
    ins = act.patient.ins_for_output() or ("", "")
    return [
        act.act_date.isoformat(),
        act.code,
        euros(act.amount_cents),
        act.professional_name,
        act.professional_rpps,
        act.counterpart_name,
        act.counterpart_rpps,
        act.patient.display_name,
        ins[0],
        ins[1],
        str(act.request_id),
        _("yes") if act.over_annual_limit else _("no"),
    ]
