"""Reads of the imaging domain, filtered by what the user may see."""

from django.apps import apps
from django.db.models import Prefetch, Q, QuerySet, Sum

from imaging.models import IngestBatch, Series, Statement, Study, StudyIdentity, StudyReport
from portal.access import read_only_patient_grants
from portal.models import Affiliation, Patient
from portal.selectors import emergency_patient_ids, patients_visible_to


def studies_visible_to(user, *, include_read_only: bool = True) -> QuerySet[Study]:
    """Studies of a patient the user may see, those attached to an RCP case of a committee
    the user sits on (the meeting reviews them), and those attached to a tele-expertise
    request routed to the user (the expert answers on them).

    ``include_read_only`` adds the studies of the patients of the user's read-only grants
    (portal.access: the expert who claimed a request reads the patient's priors): right for
    reading (the viewer, DICOMweb), wrong for anything that changes or shares (a review room,
    an external viewer link), which pass False."""
    # An emergency access is a read: it counts with the read-only grants (portal's AppConfig
    # declares it), so that DICOMweb audits it under the emergency purpose.
    condition = Q(patient__in=patients_visible_to(user, include_emergency=include_read_only))
    for shared in studies_shared_by_apps(user):
        condition |= Q(pk__in=shared)
    if include_read_only:
        condition |= read_only_studies_condition(user)
    # A patient's opposition to sharing (L1110-4) closes the other establishments' studies
    # whatever the way in: care team, committee, expert, read-only grant.
    return (
        Study.objects.filter(identity=StudyIdentity.MATCHED)
        .filter(condition)
        .filter(shared_with_establishments(establishments_of(user), user=user))
    )


def studies_shared_by_apps(user) -> list:
    """The study ids the higher apps share with ``user`` (a committee's cases, an expert's
    requests), each as a subquery.

    imaging is below rcp and expertise and imports neither: each app's AppConfig answers
    ``studies_shared_with(user)`` with a ``values("studies")`` queryset built from its own
    visibility rule, as ``portal.selectors.patient_panels`` asks for panels."""
    shared = []
    for config in apps.get_app_configs():
        hook = getattr(config, "studies_shared_with", None)
        if hook is not None:
            shared.append(hook(user))
    return shared


def establishments_of(user) -> QuerySet:
    """The ids of the establishments ``user`` acts for (their Professional affiliations), as
    a subquery: the opposition to sharing costs no query of its own."""
    if not getattr(user, "is_authenticated", False):
        return Affiliation.objects.none().values("establishment_id")
    return Affiliation.objects.filter(professional__user=user).values("establishment_id")


def shared_with_establishments(establishment_ids, *, user=None) -> Q:
    """Studies that may be shown to someone acting for ``establishment_ids``: every study of
    a patient who accepts sharing between establishments, and, for a patient who opposes it
    (Patient.sharing_opposed), only the studies those establishments made themselves.

    The one rule of the opposition, used by the dossier, the viewer, DICOMweb, the gateway's
    queries and retrieves and the prefetch of priors. Only an emergency access overrides it:
    with ``user`` (a person, not an establishment's machine), every study of the patients
    ``user`` holds an emergency access to, while it lasts; each use is audited under the
    emergency purpose (portal.emergency)."""
    if not isinstance(establishment_ids, QuerySet):
        establishment_ids = list(establishment_ids)  # a subquery stays one
    condition = Q(patient__sharing_opposed=False) | Q(establishment__in=establishment_ids)
    if user is not None and getattr(user, "is_authenticated", False):
        condition |= Q(patient__in=emergency_patient_ids(user))
    return condition


def read_only_studies_condition(user) -> Q:
    """The studies of the patients ``user`` reads under a read-only grant (none: an empty
    condition that matches nothing)."""
    condition = Q(pk__in=[])
    for _purpose, patient_ids in read_only_patient_grants(user):
        condition |= Q(patient__in=patient_ids)
    return condition


def read_only_study(user, study_id) -> tuple[Study | None, str]:
    """The study ``study_id`` if ``user`` reads it under a read-only grant, with the grant's
    purpose (the audit says why the study was opened)."""
    for purpose, patient_ids in read_only_patient_grants(user):
        study = (
            Study.objects.filter(
                pk=study_id, identity=StudyIdentity.MATCHED, patient__in=patient_ids
            )
            .filter(shared_with_establishments(establishments_of(user), user=user))
            .select_related("patient")
            .first()
        )
        if study is not None:
            return study, purpose
    return None, ""


def patient_studies(*, patient: Patient, user) -> QuerySet[Study]:
    """The patient's imaging dossier as ``user`` may see it, newest first, with what the list
    shows: a patient who opposes sharing shows only the studies of ``user``'s establishments."""
    return (
        Study.objects.filter(patient=patient, identity=StudyIdentity.MATCHED)
        .filter(shared_with_establishments(establishments_of(user), user=user))
        .select_related("establishment")
        .prefetch_related(
            Prefetch("series", queryset=Series.objects.order_by("series_number", "pk")),
            Prefetch("reports", queryset=StudyReport.objects.order_by("created_at")),
        )
        .order_by("-study_date", "-study_time", "-pk")
    )


def recent_studies(*, user, limit: int = 50) -> QuerySet[Study]:
    return (
        studies_visible_to(user)
        .select_related("patient", "establishment")
        .order_by("-study_date", "-study_time", "-pk")[:limit]
    )


def ingest_batches_of(*, user, patient: Patient) -> QuerySet[IngestBatch]:
    return IngestBatch.objects.filter(uploaded_by=user, patient=patient)


def viewer_config(*, study: Study, user, room=None, key_images: dict | None = None) -> dict:
    """What the embedded viewer needs (the include ``imaging/_viewer.html``): the study, the
    patient's other studies the user may see (to compare with a prior), the live room, and
    where to post key images (``{"url", "csrf"}``, an RCP case's page) or None."""
    from imaging.review import display_name

    patient = study.patient
    others = list(
        studies_visible_to(user)
        .filter(patient=patient)
        .exclude(pk=study.pk)
        .order_by("-study_date", "-study_time", "-pk")[:20]
    )
    # The viewer compares with the next study in the list: the latest prior exam comes first,
    # later exams after the priors.
    if study.study_date is not None:
        others.sort(
            key=lambda other: bool(other.study_date and other.study_date > study.study_date)
        )
    return viewer_config_of(
        study=study,
        studies=[study, *others],
        user_info={"id": user.pk, "name": display_name(user)},
        room=room,
        coordinator=room is not None and room.coordinator_id == user.pk,
        key_images=key_images,
    )


def viewer_config_of(
    *, study: Study, studies: list, user_info: dict, room=None, coordinator=False, key_images=None
) -> dict:
    """The viewer's configuration for ``studies`` (``study`` first): also what a share's
    recipient, who has no account, gets for the shared studies only (imaging.shares)."""
    from imaging.viewer_labels import LABELS

    patient = study.patient
    return {
        "dicomweb": "/dicomweb",
        "studies": [
            {
                "uid": item.study_instance_uid,
                "label": " · ".join(
                    part
                    for part in (
                        item.study_date.strftime("%d/%m/%Y") if item.study_date else "",
                        item.modalities,
                        item.description,
                    )
                    if part
                ),
                "modalities": item.modalities,
            }
            for item in studies
        ],
        "patient": {
            "name": patient.display_name,
            "birthDate": patient.birth_date.strftime("%d/%m/%Y") if patient.birth_date else "",
            "sex": patient.sex,
        },
        "room": (
            {
                "id": str(room.pk),
                "ws": f"/ws/review/{room.pk}/",
                "title": room.title,
                "coordinator": coordinator,
            }
            if room is not None
            else None
        ),
        "user": user_info,
        "keyImages": key_images,
        "labels": {key: str(text) for key, text in LABELS.items()},
    }


def studies_for_establishment(establishment) -> QuerySet[Study]:
    """The studies an establishment may query and retrieve through the DICOM gateway (its
    PACS asks, no user): the matched studies of the patients it knows (an IPP of its own),
    from every establishment of the region, under the patient's opposition to sharing."""
    from portal.models import PatientIdentifier

    known = PatientIdentifier.objects.filter(establishment=establishment).values("patient_id")
    return Study.objects.filter(identity=StudyIdentity.MATCHED, patient__in=known).filter(
        shared_with_establishments([establishment.pk])
    )


# --- The programme's indicators (imaging.activity) ---------------------------------------------

ACTIVITY_GROUPINGS = ("month", "quarter", "year", "period")


def _activity_bucket(month, group: str, first):
    if group == "month":
        return month
    if group == "quarter":
        return month.replace(month=3 * ((month.month - 1) // 3) + 1)
    if group == "year":
        return month.replace(month=1)
    return first


def activity_table(
    *, period, group: str = "month", establishment_ids=None, modality: str | None = None
) -> dict:
    """The programme's figures over ``period`` (portal.periods.Period; the months it touches,
    whole), summed by ``group`` (month, quarter, year or the whole period), in one query
    whatever the period.

    Returns ``{"lines": {(establishment_id, bucket): {figure: value}}, "region": {bucket:
    {figure: value}}}``; a bucket is its first month's first day (the period's first month for
    "period"). ``establishment_ids`` limits the lines (a director sees his own); the region's
    totals are always every establishment's, those of no establishment included.
    ``modality``: one modality's rows only ("" for the figures that have none).
    """
    if group not in ACTIVITY_GROUPINGS:
        raise ValueError(f"group must be one of {ACTIVITY_GROUPINGS}")
    first = period.months()[0]
    return _activity_sums(
        _activity_rows(period, modality),
        "month",
        establishment_ids=establishment_ids,
        bucket=lambda month: _activity_bucket(month, group, first),
        per_establishment=True,
    )


def _activity_rows(period, modality: str | None):
    """The programme's monthly rows of the months ``period`` touches, of one modality or all."""
    from imaging.models import ActivityMonth

    months = period.months()
    rows = ActivityMonth.objects.filter(month__gte=months[0], month__lte=months[-1])
    return rows if modality is None else rows.filter(modality=modality)


def _activity_sums(rows, key: str, *, establishment_ids, bucket, per_establishment) -> dict:
    """``rows`` summed in one grouped query by establishment, ``key`` and figure, then by
    ``bucket(key)``: the region's totals of every row, the lines of ``establishment_ids``
    only (all when None), per (establishment, bucket) or, not ``per_establishment``, per
    bucket summed over them."""
    wanted = None if establishment_ids is None else set(establishment_ids)
    lines: dict = {}
    region: dict = {}
    for establishment_id, value_of_key, figure, value in (
        rows.order_by()
        .values("establishment_id", key, "figure")
        .annotate(total=Sum("value"))
        .values_list("establishment_id", key, "figure", "total")
    ):
        name = bucket(value_of_key)
        totals = region.setdefault(name, {})
        totals[figure] = totals.get(figure, 0) + value
        if wanted is None or establishment_id in wanted:
            line = lines.setdefault((establishment_id, name) if per_establishment else name, {})
            line[figure] = line.get(figure, 0) + value
    return {"lines": lines, "region": region}


def statements_of(establishments, *, establishment=None, year: int | None = None):
    """The usage statements of ``establishments`` (a queryset the caller may read), newest
    first, optionally of one of them and one year, with their establishment."""
    statements = Statement.objects.filter(establishment__in=establishments)
    if establishment is not None:
        statements = statements.filter(establishment=establishment)
    if year is not None:
        statements = statements.filter(month__year=year)
    return statements.select_related("establishment").order_by("-month", "establishment__name")


def activity_buckets(period, group: str) -> list:
    """Every bucket of ``period`` as activity_table names them, oldest first, those without
    a figure included (a table's empty line, a chart's empty bar)."""
    months = period.months()
    return list(dict.fromkeys(_activity_bucket(month, group, months[0]) for month in months))


def activity_modalities() -> list[str]:
    """The modalities the programme's figures know ("CT", "CT/PT"), for the page's filter."""
    from imaging.models import ActivityMonth

    return list(
        ActivityMonth.objects.exclude(modality="")
        .order_by("modality")
        .values_list("modality", flat=True)
        .distinct()
    )


def activity_by_modality(
    *, period, figures, establishment_ids=None, modality: str | None = None
) -> dict:
    """``figures`` over the whole ``period`` per modality, in one query: ``{"lines":
    {modality: {figure: value}}, "region": {modality: {figure: value}}}``, the lines summing
    ``establishment_ids`` (every establishment when None), the region every row."""
    rows = _activity_rows(period, modality).filter(figure__in=list(figures)).exclude(modality="")
    return _activity_sums(
        rows,
        "modality",
        establishment_ids=establishment_ids,
        bucket=lambda modality: modality,
        per_establishment=False,
    )
