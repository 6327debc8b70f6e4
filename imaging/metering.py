"""Usage metering for the regional programme's economic model (issue 17): a monthly statement
per establishment, issued once its month is closed, never changed afterwards.

A statement counts, for its establishment and month (Europe/Paris):

* ``archive``: the exams archived that month, one per study however often it was sent, by
  modality (the indicators' "studies", imaging.activity);
* ``sharing``: its exams opened that month by professionals of another establishment, each
  once a month (the indicators' "opened_by_others");
* ``storage``: the gigabytes (10⁹ bytes) of its studies' images stored at the month's end,
  those that went through the portal's ingest (a study only found in the archive has none).

Each line is priced with METERING_PRICES as it stood when the statement was issued, and keeps
that price. The counts are made again from the data, the same way, at every issue: what the
data now says of an earlier statement's month (a study indexed late under its archiving date,
a study moved to another establishment) that differs from what was billed for it becomes a
correction line of the statement being issued, at the price of the day. A statement's month is
recounted for ``CORRECTION_MONTHS`` months.

The beat task ``imaging.issue_statements`` runs after the indicators' job, which closes the
months (ActivityMonthState.closed, ACTIVITY_MONTH_CLOSES_AFTER_DAYS after their end).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.db.models.functions import TruncMonth
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from imaging import activity
from imaging import permissions as may
from imaging.models import (
    ActivityMonthState,
    Instance,
    MeteringService,
    Statement,
    StatementDocument,
    StatementLine,
)
from portal import audit, documents
from portal.audit import Actor
from portal.periods import local_zone

# How long a statement's month is recounted for corrections: a year of statements.
CORRECTION_MONTHS = 12
GIGABYTE = Decimal(10**9)
CENT = Decimal("0.01")
GB_PRECISION = Decimal("0.001")

Key = tuple[str, str]  # (service, modality)


@dataclass(frozen=True)
class IssueReport:
    months: list[dt.date]  # issued by this run, oldest first
    statements: int
    corrections: int


def amount(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """A line's amount in euros, rounded to the cent (half up, as invoices round)."""
    return (quantity * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)


def gigabytes(size: int) -> Decimal:
    return (Decimal(size) / GIGABYTE).quantize(GB_PRECISION, rounding=ROUND_HALF_UP)


# --- Counting -----------------------------------------------------------------------------------


def usage(months: list[dt.date]) -> dict[tuple[int, dt.date], dict[Key, Decimal]]:
    """What the data says now of ``months`` (first days), per establishment and month:
    {(establishment pk, month): {(service, modality): quantity}}, zero quantities left out."""
    if not months:
        return {}
    zone = local_zone()
    counted: dict[tuple[int, dt.date], dict[Key, Decimal]] = defaultdict(dict)
    # The indicators' own counting, over the months asked, closed or not.
    figures = activity._Figures(months)
    starts_at = dt.datetime.combine(min(months), dt.time.min, tzinfo=zone)
    archived = activity._archived(figures, starts_at, zone)
    activity._sharing(figures, starts_at, zone, archived)
    services = {"studies": MeteringService.ARCHIVE, "opened_by_others": MeteringService.SHARING}
    for (establishment_id, month, modality, figure), value in figures.values.items():
        service = services.get(figure)
        if service is None or establishment_id is None or not value:
            continue
        counted[(establishment_id, month)][(service, modality)] = Decimal(value)
    for (establishment_id, month), size in _stored_bytes(months, zone).items():
        if size:
            counted[(establishment_id, month)][(MeteringService.STORAGE, "")] = gigabytes(size)
    return counted


def _stored_bytes(months: list[dt.date], zone) -> dict[tuple[int, dt.date], int]:
    """The bytes of each establishment's studies archived before the end of each month: the
    sizes summed per month of archiving (one query), then cumulated."""
    ends_at = dt.datetime.combine(activity.next_month(max(months)), dt.time.min, tzinfo=zone)
    per_month = (
        Instance.objects.filter(
            series__study__establishment__isnull=False, series__study__created_at__lt=ends_at
        )
        .annotate(month=TruncMonth("series__study__created_at", tzinfo=zone))
        .order_by()
        .values("series__study__establishment_id", "month")
        .annotate(total=Sum("size"))
        .values_list("series__study__establishment_id", "month", "total")
    )
    archived: dict[int, list[tuple[dt.date, int]]] = defaultdict(list)
    for establishment_id, month, total in per_month:
        archived[establishment_id].append((activity.month_of(month, zone), total or 0))
    stored = {}
    for establishment_id, sizes in archived.items():
        for month in months:
            stored[(establishment_id, month)] = sum(s for m, s in sizes if m <= month)
    return stored


def _billed(months: list[dt.date]) -> dict[tuple[int, dt.date], dict[Key, Decimal]]:
    """What the statements said of ``months``: their lines, and the corrections of them."""
    billed: dict[tuple[int, dt.date], dict[Key, Decimal]] = defaultdict(
        lambda: defaultdict(Decimal)
    )
    lines = StatementLine.objects.filter(
        Q(kind=StatementLine.Kind.NORMAL, statement__month__in=months)
        | Q(kind=StatementLine.Kind.CORRECTION, corrects_month__in=months)
    ).values_list(
        "statement__establishment_id",
        "statement__month",
        "corrects_month",
        "service",
        "modality",
        "quantity",
    )
    for establishment_id, month, corrects_month, service, modality, quantity in lines:
        billed[(establishment_id, corrects_month or month)][(service, modality)] += quantity
    return billed


# --- Issuing ------------------------------------------------------------------------------------

# "metering" in ASCII: one issuing run at a time (the beat's and an operator's).
_ISSUE_LOCK = 0x6D65746572696E67


def statements_issue(*, now: dt.datetime | None = None) -> IssueReport:
    """Issue the statements of every closed month not issued yet, oldest first, each
    establishment with something to bill once; the first carries the corrections of the
    months issued before. Idempotent: a month once issued is never issued again."""
    now = now or timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ISSUE_LOCK])
        closed = sorted(
            ActivityMonthState.objects.filter(closed=True).values_list("month", flat=True)
        )
        issued = sorted(set(Statement.objects.values_list("month", flat=True)))
        last = issued[-1] if issued else None
        months = [m for m in closed if last is None or m > last]
        if not months:
            return IssueReport(months=[], statements=0, corrections=0)
        recounted = issued[-CORRECTION_MONTHS:]
        counts = usage(sorted({*recounted, *months}))
        prices = settings.METERING_PRICES
        corrections = _corrections(recounted, counts, prices)
        made, corrected = 0, 0
        for index, month in enumerate(months):
            lines: dict[int, list[StatementLine]] = defaultdict(list)
            for (establishment_id, counted_month), quantities in counts.items():
                if counted_month != month:
                    continue
                for (service, modality), quantity in sorted(quantities.items()):
                    lines[establishment_id].append(
                        StatementLine(
                            service=service,
                            modality=modality,
                            quantity=quantity,
                            unit_price=prices[service],
                            amount=amount(quantity, prices[service]),
                        )
                    )
            if index == 0:
                for establishment_id, extra in corrections.items():
                    lines[establishment_id].extend(extra)
                    corrected += len(extra)
            made += _write(month, lines, now)
        audit.record(
            actor=Actor.system("usage metering"),
            event=audit.AuditEventId.APPLICATION_ACTIVITY,
            action=audit.AuditAction.CREATE,
            object_type="imaging.statement",
            purpose=audit.AuditPurpose.ADMINISTRATION,
            detail={
                "months": [f"{m:%Y-%m}" for m in months],
                "statements": made,
                "corrections": corrected,
            },
        )
    return IssueReport(months=months, statements=made, corrections=corrected)


def _corrections(recounted, counts, prices) -> dict[int, list[StatementLine]]:
    """Per establishment, a line for each quantity of an issued month that the data now says
    differently (positive: more than was billed; negative: less)."""
    billed = _billed(recounted)
    lines: dict[int, list[StatementLine]] = defaultdict(list)
    for key in sorted({*billed, *(k for k in counts if k[1] in set(recounted))}):
        establishment_id, month = key
        said, now = billed.get(key, {}), counts.get(key, {})
        for service, modality in sorted({*said, *now}):
            difference = now.get((service, modality), Decimal(0)) - said.get(
                (service, modality), Decimal(0)
            )
            if difference:
                lines[establishment_id].append(
                    StatementLine(
                        service=service,
                        modality=modality,
                        quantity=difference,
                        unit_price=prices[service],
                        amount=amount(difference, prices[service]),
                        kind=StatementLine.Kind.CORRECTION,
                        corrects_month=month,
                    )
                )
    return lines


def _write(month: dt.date, lines: dict[int, list[StatementLine]], now) -> int:
    """The statements of ``month``, with their lines and totals (a few bulk inserts)."""
    statements = []
    for establishment_id, its_lines in sorted(lines.items()):
        normal = [line for line in its_lines if line.kind == StatementLine.Kind.NORMAL]

        def quantity(service, normal=normal):
            return sum((line.quantity for line in normal if line.service == service), Decimal(0))

        statements.append(
            Statement(
                establishment_id=establishment_id,
                month=month,
                issued_at=now,
                exams_archived=int(quantity(MeteringService.ARCHIVE)),
                exams_consulted=int(quantity(MeteringService.SHARING)),
                storage_gb=quantity(MeteringService.STORAGE),
                total=sum((line.amount for line in its_lines), Decimal(0)),
            )
        )
    Statement.objects.bulk_create(statements)
    # bulk_create sets the pks on PostgreSQL and SQLite alike (RETURNING).
    by_establishment = {statement.establishment_id: statement for statement in statements}
    rows = []
    for establishment_id, its_lines in lines.items():
        for line in its_lines:
            line.statement = by_establishment[establishment_id]
            rows.append(line)
    StatementLine.objects.bulk_create(rows)
    return len(statements)


# --- Outputs ------------------------------------------------------------------------------------


def euros(value: Decimal) -> str:
    """An amount as the billing office's spreadsheet reads it: 1234,50."""
    return f"{value.quantize(CENT, rounding=ROUND_HALF_UP):f}".replace(".", ",")


def french_decimal(value: Decimal, places: int = 0) -> str:
    """A number with its significant decimals, at least ``places``, after a comma: 12, 1,25,
    0,80."""
    value = value.normalize()
    if value.as_tuple().exponent > -places:
        value = value.quantize(Decimal(1).scaleb(-places))
    return f"{value:f}".replace(".", ",")


def download_name(statement: Statement, extension: str) -> str:
    return f"releve-usage-{statement.establishment.finess}-{statement.month:%Y-%m}.{extension}"


@documents.kind(StatementDocument, template="imaging/metering/pdf.html", folder="imaging/pdf")
def statement_context(document: StatementDocument) -> dict:
    """The statement in French (portal.documents renders it in French, Paris time)."""
    statement = Statement.objects.select_related("establishment").get(pk=document.statement_id)
    return {
        "statement": statement,
        "establishment": statement.establishment,
        "lines": list(statement.lines.all()),
    }


class StatementRefused(Exception):
    """A request about a statement that its author may not make (the reason, for the user)."""


def statement_pdf_request(*, statement: Statement, by: Actor) -> StatementDocument:
    """The statement's PDF being made or made, else a new one queued after commit (a failed
    one is made again)."""
    if not may.may_view_statement(user=by.user, statement=statement):
        raise StatementRefused(_("You may not read this statement."))
    return documents.reuse_or_create(
        StatementDocument,
        live=statement.documents.exclude(status=StatementDocument.Status.FAILED),
        statement=statement,
    )


@dataclass(frozen=True)
class StatementOutputs:
    """The PDF block of a statement page (``templates/imaging/metering/_outputs.html``)."""

    documents: list[StatementDocument]
    can_ask: bool
    ask_url: str
    refresh_url: str

    @property
    def in_flight(self) -> bool:
        return any(document.is_in_flight for document in self.documents)


def statement_outputs(*, statement: Statement, user) -> StatementOutputs:
    """The PDF made or being made, else the last failed try, and the button to make one."""
    made = list(statement.documents.order_by("-created_at", "-pk"))
    live = [document for document in made if document.status != StatementDocument.Status.FAILED]
    shown = live or made[:1]
    for document in shown:
        document.download_url = reverse(
            "imaging-statement-pdf",
            kwargs={"statement_id": statement.pk, "document_id": document.pk},
        )
    return StatementOutputs(
        documents=shown,
        can_ask=not live and may.may_view_statement(user=user, statement=statement),
        ask_url=reverse("imaging-statement-pdf-request", kwargs={"statement_id": statement.pk}),
        refresh_url=reverse("imaging-statement-outputs", kwargs={"statement_id": statement.pk}),
    )


# --- The CSV ------------------------------------------------------------------------------------


def csv_rows(statement: Statement, lines: list[StatementLine]) -> list[list[str]]:
    """The header and one row per line, then the total (French Excel: portal.indicators)."""
    rows = [
        [
            _("Establishment"),
            _("FINESS"),
            _("Month"),
            _("Line"),
            _("Corrected month"),
            _("Service"),
            _("Modality"),
            _("Quantity"),
            _("Unit price (€)"),
            _("Amount (€)"),
        ]
    ]
    for line in lines:
        rows.append(
            [
                statement.establishment.name,
                statement.establishment.finess,
                f"{statement.month:%Y-%m}",
                str(line.get_kind_display()),
                f"{line.corrects_month:%Y-%m}" if line.corrects_month else "",
                str(line.get_service_display()),
                line.modality,
                french_decimal(line.quantity),
                french_decimal(line.unit_price, 2),
                euros(line.amount),
            ]
        )
    rows.append(
        [
            statement.establishment.name,
            statement.establishment.finess,
            f"{statement.month:%Y-%m}",
            _("Total"),
            "",
            "",
            "",
            "",
            "",
            euros(statement.total),
        ]
    )
    return rows
