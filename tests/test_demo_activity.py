"""The demo's past year of regional imaging (demo/activity.py): every indicator has something
to show, each kind of repeat exam is there, the closed months have their statements, and
none of it reaches the demo's people."""

import datetime as dt

from django.core.management import call_command
from django.db.models import Sum

from demo import activity as demo_activity
from imaging import activity, metering
from imaging.models import ActivityMonth, ActivityMonthState, Statement, Study
from imaging.selectors import studies_for_establishment
from portal import audit
from portal.models import AuditEvent, CareRelationship, Establishment, Patient, PatientIdentifier
from portal.selectors import patients_visible_to

# Figures of imaging.activity.FIGURES that the demo's year leaves at zero, and why:
# - studies_unknown: the origin is recorded by every ingest path since the portal began; only
#   rows older than that column have none, and the demo has no such past.
# - review_rooms, review_room_participants: live reviews are held by demo personas on demo
#   studies (demo.rcp, demo.expertise), this month; the portal-only seed has none.
LEGITIMATELY_ZERO = {"studies_unknown", "review_rooms", "review_room_participants"}


def _seed_year():
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    demo_activity.seed()
    activity.activity_compute()
    metering.statements_issue()


def _region(figure: str) -> int:
    return (
        ActivityMonth.objects.filter(figure=figure, establishment__isnull=False).aggregate(
            total=Sum("value")
        )["total"]
        or 0
    )


def test_the_demo_year_gives_every_indicator_something_to_show(db):
    _seed_year()
    values = {figure: _region(figure) for figure in activity.FIGURES}
    missing = {figure for figure, value in values.items() if not value}
    assert missing <= LEGITIMATELY_ZERO, values
    for kind in ("repeat_no_prior", "repeat_prior_consulted", "repeat_possibly_redundant"):
        assert values[kind] >= demo_activity.SCENARIOS_PER_KIND // 2, values
    # A year, with seasonality and each establishment its own volume.
    months = set(ActivityMonth.objects.filter(figure="studies").values_list("month", flat=True))
    assert len(months) == demo_activity.MONTHS
    by_establishment = (
        ActivityMonth.objects.filter(figure="studies")
        .values("establishment_id")
        .annotate(total=Sum("value"))
        .values_list("total", flat=True)
    )
    assert len(set(by_establishment)) >= 4
    assert {"CT", "MR", "CR", "DX", "US", "MG"} <= set(
        Study.objects.values_list("modalities", flat=True)
    )
    # The closed months (all but the last one or two) have their statements.
    closed = set(ActivityMonthState.objects.filter(closed=True).values_list("month", flat=True))
    assert len(closed) >= demo_activity.MONTHS - 1
    assert set(Statement.objects.values_list("month", flat=True)) == closed
    # The trail of the past year still verifies.
    assert audit.verify_chain().broken is None


def test_the_demo_year_stays_away_from_the_demo_people_and_runs_once(db):
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    patients_before = Patient.objects.count()
    care_before = CareRelationship.objects.count()
    demo_activity.seed()
    # The portal-only seed has no study: every patient with one is a regional patient.
    regional = set(Study.objects.values_list("patient_id", flat=True))
    assert len(regional) == demo_activity.PATIENTS
    assert Patient.objects.count() == patients_before + demo_activity.PATIENTS
    # No care relationship: no home, GP page or dossier of a persona shows them.
    assert CareRelationship.objects.count() == care_before
    assert not CareRelationship.objects.filter(patient_id__in=regional).exists()
    for relationship in CareRelationship.objects.select_related("professional__user"):
        user = relationship.professional.user
        assert not patients_visible_to(user).filter(pk__in=regional).exists()
    # No IPP: no establishment's PACS finds or retrieves these file-less studies through
    # the gateways, and no admission feed prefetches them.
    assert not PatientIdentifier.objects.filter(patient_id__in=regional).exists()
    for establishment in Establishment.objects.all():
        assert not studies_for_establishment(establishment).exists()
    # Past dates: every study and opening is before the seed, over a year.
    oldest = Study.objects.order_by("created_at").values_list("created_at", flat=True).first()
    assert oldest < Study.objects.order_by("-created_at")[0].created_at - dt.timedelta(days=300)
    counts = (Study.objects.count(), AuditEvent.objects.count())
    demo_activity.seed()
    assert (Study.objects.count(), AuditEvent.objects.count()) == counts
