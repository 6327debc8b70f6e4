"""The programme's imaging indicators as the page and its CSVs show them: the figures of
imaging.activity (and those rcp and expertise bring) in groups, one table per group, each
column explained in a sentence, the establishments' lines and the region's.

Shapes what imaging.selectors.activity_table read (one query); reads nothing itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from imaging.activity import FIGURES
from imaging.selectors import activity_buckets

GIGABYTE = 1000**3
HOUR = 3600


@dataclass(frozen=True)
class Column:
    """A column of a table: a figure of ActivityMonth, or one computed from two of them."""

    key: str
    label: object
    explanation: object
    unit: str = ""  # "gb": bytes shown in gigabytes; "hours": a mean of seconds, in hours
    over: str = ""  # the count a mean is divided by

    def value(self, figures: dict):
        if self.unit == "hours":
            count = figures.get(self.over, 0)
            return round(figures.get(self.key, 0) / count / HOUR, 1) if count else None
        if self.unit == "gb":
            return round(figures.get(self.key, 0) / GIGABYTE, 1)
        return figures.get(self.key, 0)


@dataclass(frozen=True)
class Group:
    key: str
    title: object
    columns: tuple[Column, ...]
    charted: tuple[str, ...]  # the columns the chart draws
    note: object = ""


def _column(key, label, **kwargs) -> Column:
    return Column(key, label, FIGURES[key], **kwargs)


# The figures rcp and expertise bring (their AppConfig's imaging_activity): imaging explains
# them here without importing those apps, by the figure names they write.
_HIGHER = {
    "rcp_cases_with_studies": gettext_lazy("RCP cases submitted that month with studies attached."),
    "rcp_cases_with_other_studies": gettext_lazy(
        "RCP cases with a study of another establishment among their studies."
    ),
    "expertise_requests_with_studies": gettext_lazy(
        "Tele-expertise requests sent that month with studies attached."
    ),
    "expertise_requests_with_other_studies": gettext_lazy(
        "Tele-expertise requests with a study of another establishment among their studies."
    ),
    "expertise_exam_avoided": gettext_lazy(
        "Tele-expertise requests closed that month by the requester saying an exam was avoided."
    ),
    "expertise_transfer_avoided": gettext_lazy(
        "Tele-expertise requests closed that month by the requester saying a transfer or a "
        "referral was avoided."
    ),
    "expertise_referral_or_exam_avoided": gettext_lazy(
        "Tele-expertise requests closed that month with a referral or an exam avoided, as "
        "answered before an exam and a transfer were told apart."
    ),
    "expertise_answered": gettext_lazy(
        "Tele-expertise requests sent that month and answered (a signed report)."
    ),
    "expertise_answer_seconds": gettext_lazy(
        "Mean time from sending a tele-expertise request to its answer, for the requests sent "
        "that month (the tele-expertise indicators page gives the median)."
    ),
}

GROUPS = (
    Group(
        "archived",
        gettext_lazy("Studies archived"),
        (
            _column("studies", gettext_lazy("Studies")),
            _column("instances", gettext_lazy("Images")),
            _column("bytes", gettext_lazy("Size (GB)"), unit="gb"),
            _column("studies_access_point", gettext_lazy("DICOM gateway")),
            _column("studies_upload", gettext_lazy("Upload")),
            _column("studies_stow", gettext_lazy("STOW-RS")),
            _column("studies_migration", gettext_lazy("Migration")),
            _column("studies_archive", gettext_lazy("Found in the archive")),
            _column("studies_unknown", gettext_lazy("Origin not recorded")),
        ),
        charted=("studies",),
    ),
    Group(
        "sharing",
        gettext_lazy("Sharing between establishments"),
        (
            _column("opened_by_others", gettext_lazy("Opened by other establishments")),
            _column("opened_from_others", gettext_lazy("Opened from other establishments")),
            _column("prefetch_requests_sent", gettext_lazy("Prefetches delivered")),
            _column("prefetch_studies_sent", gettext_lazy("Priors delivered")),
        ),
        charted=("opened_by_others", "opened_from_others"),
    ),
    Group(
        "repeats",
        gettext_lazy("Repeat exams"),
        (
            _column("repeat_no_prior", gettext_lazy("No prior")),
            _column("repeat_prior_consulted", gettext_lazy("Prior consulted, exam still done")),
            _column("repeat_possibly_redundant", gettext_lazy("Possibly redundant")),
            Column(
                "expertise_exam_avoided",
                gettext_lazy("Exam avoided (tele-expertise)"),
                _HIGHER["expertise_exam_avoided"],
            ),
            Column(
                "expertise_transfer_avoided",
                gettext_lazy("Transfer avoided (tele-expertise)"),
                _HIGHER["expertise_transfer_avoided"],
            ),
            Column(
                "expertise_referral_or_exam_avoided",
                gettext_lazy("Referral or exam avoided (tele-expertise, former answer)"),
                _HIGHER["expertise_referral_or_exam_avoided"],
            ),
        ),
        charted=("repeat_no_prior", "repeat_prior_consulted", "repeat_possibly_redundant"),
        note=gettext_lazy(
            "A new exam is compared with the same patient's exams of the same modality and body "
            "part made in another establishment within the modality's window before it."
        ),
    ),
    Group(
        "meetings",
        gettext_lazy("Imaging in RCP and tele-expertise"),
        (
            Column(
                "rcp_cases_with_studies",
                gettext_lazy("RCP cases with studies"),
                _HIGHER["rcp_cases_with_studies"],
            ),
            Column(
                "rcp_cases_with_other_studies",
                gettext_lazy("with another establishment's"),
                _HIGHER["rcp_cases_with_other_studies"],
            ),
            Column(
                "expertise_requests_with_studies",
                gettext_lazy("Tele-expertise requests with studies"),
                _HIGHER["expertise_requests_with_studies"],
            ),
            Column(
                "expertise_requests_with_other_studies",
                gettext_lazy("with another establishment's"),
                _HIGHER["expertise_requests_with_other_studies"],
            ),
            _column("review_rooms", gettext_lazy("Live reviews")),
            _column("review_room_participants", gettext_lazy("Participants")),
        ),
        charted=("rcp_cases_with_studies", "expertise_requests_with_studies", "review_rooms"),
    ),
    Group(
        "turnaround",
        gettext_lazy("Turnaround"),
        (
            _column("turnaround_count", gettext_lazy("Opened by another establishment")),
            Column(
                "turnaround_seconds",
                gettext_lazy("Mean time to the first opening (h)"),
                gettext_lazy(
                    "Mean time from archiving to the first opening by another establishment."
                ),
                unit="hours",
                over="turnaround_count",
            ),
            _column("turnaround_within_day", gettext_lazy("Within a day")),
            _column("turnaround_within_week", gettext_lazy("Within a week")),
            Column(
                "expertise_answered",
                gettext_lazy("Tele-expertise requests answered"),
                _HIGHER["expertise_answered"],
            ),
            Column(
                "expertise_answer_seconds",
                gettext_lazy("Mean time to the tele-expertise answer (h)"),
                _HIGHER["expertise_answer_seconds"],
                unit="hours",
                over="expertise_answered",
            ),
        ),
        charted=("turnaround_count", "turnaround_within_day", "turnaround_within_week"),
        note=gettext_lazy(
            "A tele-expertise request counts in the month it was sent, by the requesting "
            "establishment; its median time to answer is on the tele-expertise indicators page."
        ),
    ),
    Group(
        "city",
        gettext_lazy("City doctors"),
        (
            _column("city_consultations", gettext_lazy("Studies opened by general practitioners")),
            _column("shares_made", gettext_lazy("Shares made")),
            _column("share_openings", gettext_lazy("Share openings")),
            _column("packages_made", gettext_lazy("DICOMDIR packages built")),
        ),
        charted=("city_consultations", "shares_made", "share_openings"),
        note=gettext_lazy(
            "City doctors consult for free: general practitioners with an account open the "
            "studies in the portal; the others receive a share, a link with a code sent to "
            "their e-mail, and may take the images away as a DICOMDIR package."
        ),
    ),
)
GROUPS_BY_KEY = {group.key: group for group in GROUPS}


def bucket_label(bucket: dt.date, group: str, period) -> str:
    if group == "month":
        return formats.date_format(bucket, "YEAR_MONTH_FORMAT")
    if group == "quarter":
        return _("Q%(quarter)s %(year)s") % {
            "quarter": (bucket.month - 1) // 3 + 1,
            "year": bucket.year,
        }
    if group == "year":
        return str(bucket.year)
    return _("%(start)s to %(end)s") % {
        "start": formats.date_format(period.start, "SHORT_DATE_FORMAT"),
        "end": formats.date_format(period.end, "SHORT_DATE_FORMAT"),
    }


@dataclass
class Line:
    bucket: dt.date
    label: str  # the bucket's
    establishment: object  # None: the region
    figures: dict = field(default_factory=dict)


@dataclass
class Report:
    """Per bucket, the lines of the establishments shown (by name) then the region's."""

    period: object
    group: str
    lines: list[Line]

    def buckets(self) -> list[tuple[dt.date, str]]:
        seen = {}
        for line in self.lines:
            seen.setdefault(line.bucket, line.label)
        return list(seen.items())


def build_report(*, table: dict, period, group: str, establishments) -> Report:
    """``table``: imaging.selectors.activity_table's answer; ``establishments``: those shown,
    in the order of their lines (their figures in ``table``; the others' only in the region's
    line)."""
    lines = []
    for bucket in activity_buckets(period, group):
        label = bucket_label(bucket, group, period)
        for establishment in establishments:
            lines.append(
                Line(
                    bucket, label, establishment, table["lines"].get((establishment.pk, bucket), {})
                )
            )
        lines.append(Line(bucket, label, None, table["region"].get(bucket, {})))
    return Report(period=period, group=group, lines=lines)


def table_rows(report: Report, group: Group) -> list[dict]:
    return [
        {
            "label": line.label,
            "establishment": line.establishment,
            "values": [column.value(line.figures) for column in group.columns],
        }
        for line in report.lines
    ]


def chart_data(report: Report, group: Group) -> dict:
    """What frontend/src/charts.js draws (json_script): per bucket, the charted figures of the
    establishments shown, summed."""
    columns = [column for column in group.columns if column.key in group.charted]
    buckets = report.buckets()
    sums = {bucket: {} for bucket, _label in buckets}
    for line in report.lines:
        if line.establishment is None:
            continue
        for column in columns:
            sums[line.bucket][column.key] = sums[line.bucket].get(column.key, 0) + (
                column.value(line.figures) or 0
            )
    return {
        "type": "bar",
        "labels": [label for _bucket, label in buckets],
        "datasets": [
            {
                "label": str(column.label),
                "data": [sums[bucket].get(column.key, 0) for bucket, _label in buckets],
            }
            for column in columns
        ],
    }


# Studies archived by modality, over the whole period (imaging.selectors.activity_by_modality).
MODALITY_COLUMNS = tuple(
    column
    for column in GROUPS_BY_KEY["archived"].columns
    if column.key in ("studies", "instances", "bytes")
)
MODALITY_FIGURES = tuple(column.key for column in MODALITY_COLUMNS)


@dataclass(frozen=True)
class ModalityTable:
    """Per modality, the establishments shown (summed) then the region."""

    rows: list[dict]
    columns: tuple[Column, ...] = MODALITY_COLUMNS

    @classmethod
    def build(cls, by_modality: dict) -> ModalityTable:
        modalities = sorted(by_modality["region"])
        return cls(
            rows=[
                {
                    "modality": modality,
                    "shown": [
                        c.value(by_modality["lines"].get(modality, {})) for c in MODALITY_COLUMNS
                    ],
                    "region": [c.value(by_modality["region"][modality]) for c in MODALITY_COLUMNS],
                }
                for modality in modalities
            ]
        )

    def chart(self) -> dict:
        return {
            "type": "bar",
            "labels": [row["modality"] for row in self.rows],
            "datasets": [
                {
                    "label": str(MODALITY_COLUMNS[0].label),
                    "data": [row["shown"][0] for row in self.rows],
                }
            ],
        }

    def csv_rows(self) -> list[list]:
        from portal.indicators import csv_number

        shown = [str(column.label) for column in self.columns]
        region = [_("%(figure)s, region") % {"figure": label} for label in shown]
        return [
            [_("Modality"), *shown, *region],
            *(
                [row["modality"], *(csv_number(v) for v in [*row["shown"], *row["region"]])]
                for row in self.rows
            ),
        ]


def csv_rows(report: Report, group: Group) -> list[list]:
    from portal.indicators import csv_number

    header = [_("Period"), _("Establishment"), *(str(column.label) for column in group.columns)]
    rows = [header]
    for row in table_rows(report, group):
        establishment = row["establishment"]
        rows.append(
            [
                row["label"],
                establishment.name if establishment else _("Region"),
                *(csv_number(value) for value in row["values"]),
            ]
        )
    return rows
