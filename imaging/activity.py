"""The regional programme's imaging indicators (issue 17), computed nightly into
``imaging.models.ActivityMonth`` by the beat task ``imaging.compute_activity``.

A page never scans the audit trail: it reads these summary rows (imaging.selectors
.activity_table). Every figure is a count or a sum, kept per establishment, month (Europe/
Paris) and modality, so that a quarter, a year, the region or all modalities are sums:

* **Archived** (``studies``, ``instances``, ``bytes``, ``studies_<origin>``): the studies
  first archived that month (``Study.created_at``: a study sent again is the same row, counted
  once), by the establishment that made them and by how they came (``Study.origin``). Bytes are
  those of the instances that went through the portal's ingest (a study only found in the
  archive has none known).
* **Sharing** (``opened_by_others``, ``opened_from_others``): from the audit trail's image
  accesses (DCM 110103 on ``imaging.study``, whether the viewer's, named by pk, or DICOMweb's,
  named by UID), the studies of the establishment opened that month by professionals of
  another establishment (an actor's establishment is the FINESS the trail copied), and the
  studies of other establishments opened by its own. A study opened ten times in a month by
  others counts once that month. Joining a live review is audited on its room, not on a
  study: it counts as a review (below), not here. The accesses are read from a window before
  the first open month (the longest repeat window and a month), enough for the priors of its
  new exams.
* **Prefetch** (``prefetch_requests_sent``, ``prefetch_studies_sent``): priors delivered to
  the establishment's PACS, by the month the request finished.
* **Repeat exams** (``repeat_no_prior``, ``repeat_prior_consulted``,
  ``repeat_possibly_redundant``): each new study (not a migration's, with its patient, its
  establishment and a body part, of a modality with a window in ACTIVITY_REPEAT_WINDOWS) is
  compared with the same patient's studies of the same modality and body part made in
  another establishment within the window before it and archived before it, that the
  establishment could see (the patient did not oppose sharing by then). One of them opened
  by a professional of the establishment before the new exam (its acquisition time, else its
  archiving) reads "prior consulted, exam still done"; none opened, "possibly redundant";
  no such prior, "no prior". A merged patient's studies are one patient's.
* **Turnaround** (``turnaround_count``, ``turnaround_seconds``, ``turnaround_within_day``,
  ``turnaround_within_week``): for the studies archived that month, the time to their first
  opening by another establishment, as a sum and a count (the mean is their quotient).
* **Live reviews** (``review_rooms``, ``review_room_participants``): the rooms opened that
  month (whether for an RCP case, a tele-expertise request or a study), by their
  coordinator's establishment, and their coordinator and invited members.
* **City doctors** (``city_consultations``, ``shares_made``, ``share_openings``,
  ``packages_made``): the studies opened that month by general practitioners (the trail's
  actor is an account whose professional specialty is general practice: the city doctors
  who consult in the portal, declared GP of the patient or not), by the study's
  establishment, a study counted once a month; the shares made that month with a doctor
  outside the portal, their openings as imaging.shares audits them (its page, a study, a
  document, a package downloaded: the share's view count) and the DICOMDIR packages built
  (for a care-team doctor or a share's recipient), all three by the establishment of the
  professional who made the share or asked for the package (the one the audit trail gives
  him: primary affiliation, else his first), since a share may hold studies of several
  establishments, or none but documents.
* **Higher apps' figures**: whatever an AppConfig's ``imaging_activity(starts_at=, zone=)``
  answers (ActivityFigure rows); imaging never imports rcp or expertise.

Idempotent: a run recomputes every month not yet closed, whole (its rows deleted and written
again in one transaction), and never touches a closed one. A month closes at the first run made
ACTIVITY_MONTH_CLOSES_AFTER_DAYS days after its end, so its last figures include what arrived
until then; data arriving later for it is ignored.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, TruncMonth
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from imaging.models import (
    ActivityMonth,
    ActivityMonthState,
    Instance,
    PrefetchItem,
    PrefetchRequest,
    ReviewRoom,
    Share,
    Study,
    StudyOrigin,
    StudyPackage,
)
from portal import audit
from portal.audit import Actor
from portal.models import (
    Affiliation,
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    Establishment,
    Patient,
    Specialty,
)
from portal.periods import local_zone

# The figures imaging computes, each explained in a sentence (the page shows them).
FIGURES = {
    "studies": _("Studies archived that month, each counted once however often it was sent."),
    "instances": _("Images of the studies archived that month."),
    "bytes": _("Size of the images archived that month that went through the portal."),
    "studies_access_point": _("Studies archived that month sent by the DICOM gateway."),
    "studies_upload": _("Studies archived that month uploaded on the portal."),
    "studies_stow": _("Studies archived that month sent by STOW-RS."),
    "studies_migration": _("Studies archived that month by the migration of an archive."),
    "studies_archive": _("Studies found that month in the regional archive."),
    "studies_unknown": _("Studies archived that month before their origin was recorded."),
    "opened_by_others": _(
        "Studies of the establishment opened that month by professionals of another one."
    ),
    "opened_from_others": _(
        "Studies of other establishments opened that month by the establishment's professionals."
    ),
    "prefetch_requests_sent": _("Prefetches of priors delivered to the establishment's PACS."),
    "prefetch_studies_sent": _("Prior studies delivered to the establishment's PACS."),
    "repeat_no_prior": _(
        "New exams without a recent exam of the same kind in another establishment."
    ),
    "repeat_prior_consulted": _(
        "New exams whose recent prior from another establishment was opened before: "
        "prior consulted, exam still done."
    ),
    "repeat_possibly_redundant": _(
        "New exams with a recent prior from another establishment that nobody here opened: "
        "possibly redundant."
    ),
    "review_rooms": _("Live reviews of images opened by the establishment's professionals."),
    "review_room_participants": _("Participants of those reviews, the coordinator included."),
    "turnaround_count": _("Studies archived that month that another establishment opened."),
    "turnaround_seconds": _(
        "Total time from archiving to the first opening by another establishment."
    ),
    "turnaround_within_day": _("Studies first opened by another establishment within a day."),
    "turnaround_within_week": _("Studies first opened by another establishment within a week."),
    "city_consultations": _(
        "Studies of the establishment opened that month by general practitioners (professionals "
        "of general practice with an account), each study counted once a month."
    ),
    "shares_made": _(
        "Shares with a doctor outside the portal made that month by the establishment's "
        "professionals."
    ),
    "share_openings": _(
        "Openings that month of those shares by their recipients: the page, a study, a "
        "document or a package downloaded."
    ),
    "packages_made": _(
        "DICOMDIR packages of images built that month for the establishment's professionals "
        "or the recipients of their shares."
    ),
}

DAY = dt.timedelta(days=1)
# Who counts as a city doctor in the trail: the actor's professional specialty.
GENERAL_PRACTICE = Specialty.GENERAL_PRACTICE


class ActivityFigure(NamedTuple):
    """One figure a higher app brings for a month (AppConfig ``imaging_activity``)."""

    establishment_id: int | None
    month: dt.date | dt.datetime  # any day or moment of it (a moment in any zone)
    modality: str
    figure: str
    value: int


def studies_attached_figures(
    objects: QuerySet,
    *,
    owner: str,
    establishment: str,
    moment: str,
    zone,
    figures: tuple[str, str],
) -> Iterator[ActivityFigure]:
    """For a higher app's ``imaging_activity``: of ``objects`` (RCP cases, tele-expertise
    requests: a model with a ``studies`` many-to-many), how many a month and establishment have
    studies attached, and how many have a study of another establishment among them.

    ``owner`` names the object in the many-to-many's rows ("case", "request");
    ``establishment`` is the lookup of the object's establishment; ``moment`` the date field
    that places it in a month; ``figures`` the two figures' keys (with studies, with another
    establishment's)."""
    attached = objects.model.studies.through.objects.filter(**{f"{owner}_id": OuterRef("pk")})
    rows = (
        objects.annotate(
            with_studies=Exists(attached),
            with_others=Exists(
                attached.exclude(study__establishment_id=F(f"{owner}__{establishment}")).filter(
                    study__establishment__isnull=False
                )
            ),
            month=TruncMonth(moment, tzinfo=zone),
        )
        .order_by()
        .values(establishment, "month")
        .annotate(
            studies=Count("pk", filter=Q(with_studies=True)),
            others=Count("pk", filter=Q(with_others=True)),
        )
    )
    for row in rows:
        for figure, key in zip(figures, ("studies", "others"), strict=True):
            yield ActivityFigure(row[establishment], row["month"], "", figure, row[key])


@dataclass(frozen=True)
class ComputeReport:
    months: list[dt.date]  # recomputed, oldest first
    closed: list[dt.date]  # closed by this run
    rows: int


def month_of(moment: dt.datetime | dt.date, zone: ZoneInfo | None = None) -> dt.date:
    """The first day of the month of ``moment`` in the portal's time zone."""
    if isinstance(moment, dt.datetime):
        moment = moment.astimezone(zone or local_zone()).date()
    return moment.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month + dt.timedelta(days=32)).replace(day=1)


def closes_at(month: dt.date, zone: ZoneInfo | None = None) -> dt.datetime:
    """When ``month``'s figures stop changing."""
    end = dt.datetime.combine(next_month(month), dt.time.min, tzinfo=zone or local_zone())
    return end + dt.timedelta(days=settings.ACTIVITY_MONTH_CLOSES_AFTER_DAYS)


def _months(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    month = first
    while month <= last:
        yield month
        month = next_month(month)


class _Figures:
    """The figures of the months being computed; anything of another month is dropped."""

    def __init__(self, months: Iterable[dt.date]):
        self.months = set(months)
        self.values: dict[tuple, int] = defaultdict(int)

    def add(self, establishment_id, month, modality, figure, value=1) -> None:
        if month in self.months and value:
            self.values[(establishment_id, month, modality or "", figure)] += int(value)

    def rows(self) -> list[ActivityMonth]:
        return [
            ActivityMonth(
                establishment_id=establishment_id,
                month=month,
                modality=modality,
                figure=figure,
                value=value,
            )
            for (establishment_id, month, modality, figure), value in self.values.items()
            if value
        ]


def activity_compute(*, now: dt.datetime | None = None) -> ComputeReport:
    """Recompute every open month's figures, from the first month with data to this one."""
    now = now or timezone.now()
    zone = local_zone()
    closed = set(ActivityMonthState.objects.filter(closed=True).values_list("month", flat=True))
    first = _first_month(zone)
    if first is None:
        return ComputeReport(months=[], closed=[], rows=0)
    months = [m for m in _months(first, month_of(now, zone)) if m not in closed]
    if not months:
        return ComputeReport(months=[], closed=[], rows=0)
    starts_at = dt.datetime.combine(months[0], dt.time.min, tzinfo=zone)
    figures = _Figures(months)
    studies = _archived(figures, starts_at, zone)
    first_opens = _sharing(figures, starts_at, zone, studies)
    _prefetches(figures, starts_at, zone)
    _review_rooms(figures, starts_at, zone)
    _city_doctors(figures, starts_at, zone)
    _repeats(figures, starts_at, zone, first_opens)
    _higher_apps(figures, starts_at, zone)
    with transaction.atomic():
        _lock_writers()
        # A run that wrote meanwhile may have closed some of them: those stay as it left them.
        closed_meanwhile = set(
            ActivityMonthState.objects.filter(month__in=months, closed=True).values_list(
                "month", flat=True
            )
        )
        months = [m for m in months if m not in closed_meanwhile]
        rows = [row for row in figures.rows() if row.month not in closed_meanwhile]
        closing = [m for m in months if now >= closes_at(m, zone)]
        # Whole months replaced: a figure that dropped to nothing leaves no stale row.
        ActivityMonth.objects.filter(month__in=months).delete()
        ActivityMonth.objects.bulk_create(rows, batch_size=5000)
        known = set(
            ActivityMonthState.objects.filter(month__in=months).values_list("month", flat=True)
        )
        ActivityMonthState.objects.bulk_create(
            [
                ActivityMonthState(month=m, computed_at=now, closed=m in closing)
                for m in months
                if m not in known
            ]
        )
        ActivityMonthState.objects.filter(month__in=known).update(computed_at=now)
        ActivityMonthState.objects.filter(month__in=closing).update(closed=True)
        # The trail was read, in bulk, for aggregate figures (DCM 110101 Audit Log Used).
        audit.record(
            actor=Actor.system("activity indicators"),
            event=audit.AuditEventId.AUDIT_LOG_USED,
            action=audit.AuditAction.EXECUTE,
            object_type="imaging.activitymonth",
            purpose=audit.AuditPurpose.ADMINISTRATION,
            query=f"activity indicators {months[0]:%Y-%m}..{months[-1]:%Y-%m}" if months else "",
            detail={
                "months": [f"{m:%Y-%m}" for m in months],
                "closed": [f"{m:%Y-%m}" for m in closing],
                "rows": len(rows),
            },
        )
    return ComputeReport(months=months, closed=closing, rows=len(rows))


# "activity" in ASCII: one nightly writer at a time (a manual run beside the beat's).
_WRITER_LOCK = 0x6163746976697479


def _lock_writers() -> None:
    """Serialize the writers of the summary tables until the transaction ends: PostgreSQL's
    transaction-level advisory lock; SQLite takes its write lock at BEGIN (IMMEDIATE)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_WRITER_LOCK])


def _first_month(zone) -> dt.date | None:
    """The month of the oldest study, image access or prefetch: where the figures begin."""
    candidates = [
        Study.objects.aggregate(first=Min("created_at"))["first"],
        _opens().aggregate(first=Min("occurred_at"))["first"],
        PrefetchRequest.objects.filter(state=PrefetchRequest.State.SENT).aggregate(
            first=Min("finished_at")
        )["first"],
    ]
    candidates = [moment for moment in candidates if moment is not None]
    return month_of(min(candidates), zone) if candidates else None


def _opens():
    """The audit trail's successful openings of a study's images."""
    return AuditEvent.objects.filter(
        event_id=AuditEventId.INSTANCES_ACCESSED,
        object_type="imaging.study",
        outcome=AuditOutcome.SUCCESS,
    )


@dataclass
class _Study:
    pk: int
    establishment_id: int | None
    modality: str
    created_at: dt.datetime


def _archived(figures: _Figures, starts_at, zone) -> dict[int, _Study]:
    """Studies archived in the open months, with their images, bytes and origin."""
    sizes = dict(
        Instance.objects.filter(series__study__created_at__gte=starts_at)
        .order_by()
        .values("series__study_id")
        .annotate(total=Sum("size"))
        .values_list("series__study_id", "total")
    )
    studies = {}
    rows = Study.objects.filter(created_at__gte=starts_at).values_list(
        "pk", "establishment_id", "modalities", "origin", "instance_count", "created_at"
    )
    for pk, establishment_id, modality, origin, instances, created_at in rows.iterator(
        chunk_size=5000
    ):
        month = month_of(created_at, zone)
        key = (establishment_id, month, modality)
        figures.add(*key, "studies")
        figures.add(*key, f"studies_{origin}")
        figures.add(*key, "instances", instances)
        figures.add(*key, "bytes", sizes.get(pk, 0))
        studies[pk] = _Study(pk, establishment_id, modality, created_at)
    return studies


def _sharing(figures: _Figures, starts_at, zone, archived: dict[int, _Study]) -> dict:
    """Studies opened across establishments, and the turnaround of those archived in the
    open months. Returns the first opening of each study by each establishment
    ({(study pk, establishment pk): when}), for the repeat exams."""
    longest = max(settings.ACTIVITY_REPEAT_WINDOWS.values(), default=0)
    # A prior of a new exam of the first open month may have been opened up to a window
    # (and the archiving delay, a month at most here) before it.
    since = starts_at - dt.timedelta(days=longest + 31)
    grouped = (
        _opens()
        .filter(occurred_at__gte=since)
        .exclude(actor_establishment="")
        .annotate(month=TruncMonth("occurred_at", tzinfo=zone))
        .order_by()
        .values("object_id", "actor_establishment", "month")
        .annotate(first=Min("occurred_at"))
        .values_list("object_id", "actor_establishment", "month", "first")
    )
    establishments = dict(Establishment.objects.values_list("finess", "pk"))
    opens = []
    by_pk, by_uid = set(), set()
    for object_id, finess, month, first in grouped.iterator(chunk_size=10000):
        establishment_id = establishments.get(finess)
        if establishment_id is None:
            continue
        opens.append((object_id, establishment_id, month_of(month, zone), first))
        (by_pk if object_id.isdigit() else by_uid).add(object_id)
    studies = _studies_named(by_pk, by_uid)
    first_opens: dict[tuple[int, int], dt.datetime] = {}
    first_by_others: dict[int, dt.datetime] = {}
    opened_by_others, opened_from_others = set(), set()
    for object_id, establishment_id, month, first in opens:
        study = studies.get(object_id)
        if study is None or study.establishment_id is None:
            continue
        key = (study.pk, establishment_id)
        if key not in first_opens or first < first_opens[key]:
            first_opens[key] = first
        if establishment_id == study.establishment_id:
            continue
        opened_by_others.add((study.pk, month))
        opened_from_others.add((study.pk, establishment_id, month))
        if study.pk not in first_by_others or first < first_by_others[study.pk]:
            first_by_others[study.pk] = first
    for pk, month in opened_by_others:
        study = studies[str(pk)]
        figures.add(study.establishment_id, month, study.modality, "opened_by_others")
    for pk, establishment_id, month in opened_from_others:
        study = studies[str(pk)]
        figures.add(establishment_id, month, study.modality, "opened_from_others")
    for pk, study in archived.items():
        first = first_by_others.get(pk)
        if first is None or study.establishment_id is None:
            continue
        seconds = max(0, int((first - study.created_at).total_seconds()))
        key = (study.establishment_id, month_of(study.created_at, zone), study.modality)
        figures.add(*key, "turnaround_count")
        figures.add(*key, "turnaround_seconds", seconds)
        figures.add(*key, "turnaround_within_day", seconds <= 86400)
        figures.add(*key, "turnaround_within_week", seconds <= 7 * 86400)
    return first_opens


def _studies_named(by_pk: set[str], by_uid: set[str], chunk: int = 5000) -> dict[str, _Study]:
    """The studies the trail names, by pk (the viewer) or by UID (DICOMweb): each under
    both names; a few queries of ``chunk`` names."""
    found: dict[str, _Study] = {}
    fields = ("pk", "study_instance_uid", "establishment_id", "modalities", "created_at")
    for names, by_number in ((sorted(by_pk, key=int), True), (sorted(by_uid), False)):
        for start in range(0, len(names), chunk):
            part = names[start : start + chunk]
            condition = (
                Q(pk__in=[int(n) for n in part]) if by_number else Q(study_instance_uid__in=part)
            )
            for pk, uid, establishment_id, modality, created_at in Study.objects.filter(
                condition
            ).values_list(*fields):
                study = _Study(pk, establishment_id, modality, created_at)
                found[str(pk)] = found[uid] = study
    return found


def _prefetches(figures: _Figures, starts_at, zone) -> None:
    sent = PrefetchRequest.objects.filter(
        state=PrefetchRequest.State.SENT, finished_at__gte=starts_at
    )
    for establishment_id, month, count in (
        sent.annotate(month=TruncMonth("finished_at", tzinfo=zone))
        .order_by()
        .values("establishment_id", "month")
        .annotate(count=Count("pk"))
        .values_list("establishment_id", "month", "count")
    ):
        figures.add(establishment_id, month_of(month, zone), "", "prefetch_requests_sent", count)
    for establishment_id, month, modality, count in (
        PrefetchItem.objects.filter(sent=True, request__in=sent)
        .annotate(month=TruncMonth("request__finished_at", tzinfo=zone))
        .order_by()
        .values("request__establishment_id", "month", "study__modalities")
        .annotate(count=Count("pk"))
        .values_list("request__establishment_id", "month", "study__modalities", "count")
    ):
        figures.add(
            establishment_id, month_of(month, zone), modality, "prefetch_studies_sent", count
        )


def _review_rooms(figures: _Figures, starts_at, zone) -> None:
    """Live reviews opened that month (an RCP's, a tele-expertise's or a study's), by the
    coordinator's establishment, and their participants: the coordinator and the invited."""
    coordinator_establishment = Affiliation.objects.filter(
        professional__user=OuterRef("coordinator"), is_primary=True
    ).values("establishment_id")[:1]
    for establishment_id, month, modality, rooms, invited in (
        ReviewRoom.objects.filter(created_at__gte=starts_at)
        .annotate(
            month=TruncMonth("created_at", tzinfo=zone),
            held_by=Subquery(coordinator_establishment),
        )
        .order_by()
        .values("held_by", "month", "study__modalities")
        .annotate(rooms=Count("pk", distinct=True), invited=Count("members"))
        .values_list("held_by", "month", "study__modalities", "rooms", "invited")
    ):
        key = (establishment_id, month_of(month, zone), modality)
        figures.add(*key, "review_rooms", rooms)
        figures.add(*key, "review_room_participants", rooms + invited)


def _held_by(user_field: str) -> Subquery:
    """The establishment of the professional ``user_field`` names, as the audit trail gives
    it (Professional.primary_establishment: the primary affiliation, else the first)."""
    return Subquery(
        Affiliation.objects.filter(professional__user=OuterRef(user_field))
        .order_by("-is_primary", "pk")
        .values("establishment_id")[:1]
    )


def _city_doctors(figures: _Figures, starts_at, zone, chunk: int = 5000) -> None:
    """Studies opened by general practitioners, shares made and opened, packages built."""
    gp_opens = (
        _opens()
        .filter(occurred_at__gte=starts_at, actor__professional__specialty=GENERAL_PRACTICE)
        .annotate(month=TruncMonth("occurred_at", tzinfo=zone))
        .order_by()
        .values_list("object_id", "month")
        .distinct()
    )
    named = list(gp_opens.iterator(chunk_size=10000))
    by_pk = {object_id for object_id, _month in named if object_id.isdigit()}
    studies = _studies_named(by_pk, {object_id for object_id, _m in named} - by_pk)
    # A study named by pk (the viewer) and by UID (DICOMweb) the same month counts once.
    opened = {
        (studies[object_id].pk, month_of(month, zone))
        for object_id, month in named
        if object_id in studies
    }
    for pk, month in opened:
        study = studies[str(pk)]
        figures.add(study.establishment_id, month, study.modality, "city_consultations")

    for establishment_id, month, count in (
        Share.objects.filter(created_at__gte=starts_at)
        .annotate(month=TruncMonth("created_at", tzinfo=zone), held_by=_held_by("author"))
        .order_by()
        .values("held_by", "month")
        .annotate(count=Count("pk"))
        .values_list("held_by", "month", "count")
    ):
        figures.add(establishment_id, month_of(month, zone), "", "shares_made", count)

    # imaging.shares writes every opening as a read naming the share in its detail.
    openings = list(
        AuditEvent.objects.filter(
            occurred_at__gte=starts_at,
            action=AuditAction.READ,
            outcome=AuditOutcome.SUCCESS,
            detail__has_key="share",
        )
        .annotate(
            month=TruncMonth("occurred_at", tzinfo=zone),
            share_key=KeyTextTransform("share", "detail"),
        )
        .order_by()
        .values("share_key", "month")
        .annotate(count=Count("pk"))
        .values_list("share_key", "month", "count")
    )
    share_ids = sorted({int(key) for key, _month, _count in openings if str(key).isdigit()})
    held_by = {}
    for start in range(0, len(share_ids), chunk):
        held_by.update(
            Share.objects.filter(pk__in=share_ids[start : start + chunk])
            .annotate(held_by=_held_by("author"))
            .values_list("pk", "held_by")
        )
    for key, month, count in openings:
        if str(key).isdigit() and int(key) in held_by:
            figures.add(held_by[int(key)], month_of(month, zone), "", "share_openings", count)

    built = (StudyPackage.Status.READY, StudyPackage.Status.EXPIRED)
    for establishment_id, month, count in (
        StudyPackage.objects.filter(status__in=built, finished_at__gte=starts_at)
        .annotate(
            month=TruncMonth("finished_at", tzinfo=zone),
            held_by=Coalesce(_held_by("requested_by"), _held_by("share__author")),
        )
        .order_by()
        .values("held_by", "month")
        .annotate(count=Count("pk"))
        .values_list("held_by", "month", "count")
    ):
        figures.add(establishment_id, month_of(month, zone), "", "packages_made", count)


@dataclass
class _Exam:
    pk: int
    establishment_id: int
    created_at: dt.datetime
    date: dt.date
    done_at: dt.datetime  # when the exam was made: acquisition, else archiving


def _exam(pk, establishment_id, study_date, study_time, created_at, zone) -> _Exam:
    date = study_date or created_at.astimezone(zone).date()
    done_at = (
        dt.datetime.combine(study_date, study_time, tzinfo=zone)
        if study_date and study_time
        else created_at
    )
    return _Exam(pk, establishment_id, created_at, date, done_at)


def _repeats(figures: _Figures, starts_at, zone, first_opens: dict) -> None:
    """Each new exam of the open months: no prior, prior consulted, or possibly redundant."""
    windows = settings.ACTIVITY_REPEAT_WINDOWS
    if not windows:
        return
    shaped = Study.objects.filter(
        modalities__in=list(windows),
        patient__isnull=False,
        establishment__isnull=False,
    ).exclude(body_part="")
    fields = (
        "pk",
        "patient_id",
        "modalities",
        "body_part",
        "establishment_id",
        "study_date",
        "study_time",
        "created_at",
    )
    # A migration brings an establishment's past exams, not new ones.
    new = list(
        shaped.filter(created_at__gte=starts_at)
        .exclude(origin=StudyOrigin.MIGRATION)
        .values_list(*fields)
        .iterator(chunk_size=5000)
    )
    if not new:
        return
    earliest = min(row[5] or row[7].astimezone(zone).date() for row in new)
    since = earliest - dt.timedelta(days=max(windows.values()))
    priors: dict[tuple, list[_Exam]] = defaultdict(list)
    for pk, patient_id, modality, body_part, establishment_id, date, time, created_at in (
        shaped.filter(
            Q(study_date__gte=since)
            | Q(
                study_date__isnull=True,
                created_at__gte=dt.datetime.combine(since, dt.time.min, tzinfo=zone),
            )
        )
        .values_list(*fields)
        .iterator(chunk_size=5000)
    ):
        priors[(patient_id, modality, body_part.strip().upper())].append(
            _exam(pk, establishment_id, date, time, created_at, zone)
        )
    opposed = dict(
        Patient.objects.filter(sharing_opposed=True).values_list("pk", "sharing_opposed_at")
    )
    for pk, patient_id, modality, body_part, establishment_id, date, time, created_at in new:
        exam = _exam(pk, establishment_id, date, time, created_at, zone)
        window = dt.timedelta(days=windows[modality])
        shared = patient_id not in opposed or (
            opposed[patient_id] is not None and opposed[patient_id] > created_at
        )
        candidates = [
            prior
            for prior in priors[(patient_id, modality, body_part.strip().upper())]
            if shared
            and prior.pk != pk
            and prior.establishment_id != establishment_id
            and prior.created_at < created_at
            and dt.timedelta(0) <= exam.date - prior.date <= window
        ]
        if not candidates:
            figure = "repeat_no_prior"
        elif any(
            first_opens.get((prior.pk, establishment_id), exam.done_at) < exam.done_at
            for prior in candidates
        ):
            figure = "repeat_prior_consulted"
        else:
            figure = "repeat_possibly_redundant"
        figures.add(establishment_id, month_of(created_at, zone), modality, figure)


def _higher_apps(figures: _Figures, starts_at, zone) -> None:
    """The figures rcp and expertise bring, through their AppConfig (imaging never imports
    them): ``imaging_activity(starts_at=..., zone=...)`` -> ActivityFigure rows."""
    for config in apps.get_app_configs():
        answer = getattr(config, "imaging_activity", None)
        if answer is None:
            continue
        for row in answer(starts_at=starts_at, zone=zone):
            figures.add(
                row.establishment_id, month_of(row.month, zone), row.modality, row.figure, row.value
            )
