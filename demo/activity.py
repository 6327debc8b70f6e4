"""A plausible past year of regional imaging activity, for the programme's indicators (issue 17).

The demo's own studies are a dozen, all archived the day it was seeded: the indicators page
(imaging.activity) would show one month and no repeat exam. This module adds the twelve
months before the current one across the demo's establishments: a few hundred studies of
CT, MR, CR/DX, US and MG with seasonality (a summer dip), each establishment its own volume
and its own mix of origins (access point, upload, STOW-RS, migration, archive), openings of
studies by professionals of other establishments (the audit trail's image accesses), priors
delivered to the PACS of the establishments that declared one, and repeat exams of each kind
built on purpose: "no prior", "prior consulted, exam still done" and "possibly redundant".

Kept apart from the demo's people: the studies belong to fictitious regional patients (test
INS only, each with a home establishment) that no demo professional has a care relationship
with, so no home page, GP page, dossier or browser walk changes, and a persona who types one
of their ids gets the audited 404 of a missing study. The professionals who open them are
fictitious too (a name, a test RPPS and the FINESS the trail copies, no account). The studies
are index rows only (Study, Series, one Instance row per series carrying its size): no archive
file, no thumbnail. Nothing in the demo can open them: no persona has a care relationship
(the access helpers' 404), and no establishment holds an IPP of these patients, so the
gateways' query/retrieve and the HL7-triggered prefetch never reach them. The indicators need
nothing more.

Idempotent: a second run finds its first study and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from imaging.models import (
    Instance,
    PrefetchItem,
    PrefetchRequest,
    PrefetchTrigger,
    Series,
    Share,
    Study,
    StudyIdentity,
    StudyOrigin,
    StudyPackage,
)
from portal import audit, services
from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    AuditPurpose,
    Establishment,
    IdentityConflictSource,
    IdentityStatus,
    InsOid,
    Patient,
    Professional,
    Sex,
    Specialty,
)

SEED = 17  # fixed: the same year on every seed (relative to the day it is seeded)
MONTHS = 12
PATIENTS = 72
BACKGROUND_STUDIES = 330
# Repeat exams built on purpose, of each kind (the background makes only "no prior").
SCENARIOS_PER_KIND = 9

# FINESS, share of the region's volume, origins (weights), the establishment's professionals
# who open other establishments' studies (fictitious: no account, test RPPS only, names
# no demo person bears).
ESTABLISHMENTS = {
    "370000481": (0.38, {"access_point": 6, "stow": 3, "upload": 1}, ["Dr Aubin", "Dr Perrault"]),
    "450000088": (0.24, {"access_point": 5, "stow": 1, "upload": 1}, ["Dr Tanguy", "Dr Barre"]),
    "180000028": (0.16, {"access_point": 6, "upload": 2}, ["Dr Lenoir"]),
    "280000134": (0.13, {"stow": 4, "upload": 2}, ["Dr Ferreira"]),
    "410009990": (0.09, {"upload": 3, "stow": 1}, ["Dr Joly"]),
}
# The establishments whose PACS receives priors (demo.imaging declares them).
PREFETCHING = {"370000481": "CHRUT_PACS", "180000028": "CHB_PACS"}

# modality, share, body parts, images per series (min, max), bytes per image
MODALITIES = [
    ("CT", 0.30, ["CHEST", "ABDOMEN", "HEAD", "PELVIS"], (120, 400), 525_000),
    ("MR", 0.15, ["BRAIN", "KNEE", "SPINE", "PELVIS"], (60, 200), 140_000),
    ("CR", 0.17, ["CHEST", "HAND", "KNEE"], (1, 2), 9_000_000),
    ("DX", 0.10, ["CHEST", "SPINE"], (1, 3), 12_000_000),
    ("US", 0.16, ["ABDOMEN", "NECK", "PELVIS"], (10, 40), 700_000),
    ("MG", 0.12, ["BREAST"], (4, 4), 30_000_000),
]
# The same exam again, elsewhere, within the repeat window (settings.ACTIVITY_REPEAT_WINDOWS).
SINGLE_SERIES = {"CR", "DX", "MG"}
REPEATABLE = [("CT", "CHEST"), ("CT", "ABDOMEN"), ("MR", "BRAIN"), ("CR", "CHEST")]
REPEAT_GAP_DAYS = {"CT": (4, 20), "MR": (5, 20), "CR": (1, 5), "DX": (1, 5)}

LAST_NAMES = ["Aubry", "Bazin", "Chopin", "Delattre", "Esnault", "Foucher", "Grondin", "Hamon"]
# The accession numbers of this year's studies: how a check tells them from the demo's own.
ACCESSION_PREFIX = "RA"
FIRST_NAMES = {
    Sex.MALE: ["Roger", "Yves", "Lucien", "Marcel", "Didier", "Thierry"],
    Sex.FEMALE: ["Odette", "Josiane", "Ginette", "Colette", "Martine", "Yvette"],
}


def _uid(*parts: object) -> str:
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=["\x1f".join(map(str, parts))])


FIRST_UID = _uid("mirc-demo-activity", "study", 0)


@dataclass
class _Planned:
    patient: Patient
    ipp: str  # the patient id its home establishment's modalities write (no IPP row)
    establishment: Establishment
    modality: str
    body_part: str
    done_at: dt.datetime  # the acquisition
    origin: str
    opened_by: list[tuple[str, dt.datetime]]  # (FINESS of the opener, when)


def seed(*, stdout=None) -> None:
    """The demo's past year of regional imaging activity (see the module's docstring)."""
    if Study.objects.filter(study_instance_uid=FIRST_UID).exists():
        return
    rng = random.Random(SEED)  # noqa: S311 - the demo's data, not a secret
    now = timezone.now()
    zone = timezone.get_current_timezone()
    today = now.astimezone(zone).date()
    this_month = today.replace(day=1)
    first_month = this_month.replace(year=this_month.year - 1)  # twelve whole months
    establishments = {e.finess: e for e in Establishment.objects.filter(finess__in=ESTABLISHMENTS)}
    with transaction.atomic():
        patients = _patients(rng, establishments)
        planned = _background(rng, patients, establishments, first_month, this_month, zone)
        planned += _repeats(rng, patients, establishments, first_month, this_month, zone)
        studies = _write_studies(rng, planned, now)
        opens = _write_opens(rng, planned, studies, now)
        prefetches = _write_prefetches(rng, planned, studies, establishments, now)
        city = _write_city_doctors(rng, planned, studies, now)
    if stdout is not None:
        stdout.write(
            f"Regional activity: {len(studies)} studies over {MONTHS} months, "
            f"{opens} openings by other establishments, {prefetches} prefetches, "
            f"{city} city doctors' consultations, shares and packages."
        )


def _patients(rng, establishments) -> list[tuple[Patient, Establishment, str]]:
    """Fictitious regional patients with test INS and no care relationship: nobody of the
    demo follows them. Registered by INS only, without an IPP: the gateways answer an
    establishment's PACS about the patients it holds an IPP of (gateway_query), so no demo
    PACS finds (or retrieves, or is sent as priors) these studies without files. The DICOM
    headers still carry the home establishment's patient id, as a modality writes it."""
    from demo.seed import BIRTH_PLACES, test_ins

    actor = Actor.system("seed_demo")
    homes = list(ESTABLISHMENTS)
    weights = [ESTABLISHMENTS[f][0] for f in homes]
    result = []
    for number in range(PATIENTS):
        sex = Sex.MALE if number % 2 else Sex.FEMALE
        birth_date = dt.date(rng.randint(1938, 1990), rng.randint(1, 12), rng.randint(1, 28))
        place = BIRTH_PLACES[number % 7]  # French birth places: an NIR
        ins, oid = test_ins(
            sex=sex, birth_date=birth_date, place=place, order=700 + number, nia=False
        )
        assert oid == InsOid.NIR_TEST
        home = establishments[rng.choices(homes, weights)[0]]
        registered = services.patient_register(
            traits=services.PatientTraits(
                birth_name=LAST_NAMES[number % len(LAST_NAMES)],
                first_names=rng.choice(FIRST_NAMES[sex]),
                sex=sex,
                birth_date=birth_date,
                birth_place_code=place,
            ),
            ins_matricule=ins,
            ins_oid=oid,
            identity_status=IdentityStatus.QUALIFIED,
            source=IdentityConflictSource.IMPORT,
            by=actor,
        )
        result.append((registered.patient, home, f"R{700000 + number}"))
    return result


def _seasonal_day(rng, first_month: dt.date, this_month: dt.date) -> dt.date:
    """A day of the past year, fewer in August and at Christmas."""
    days = (this_month - first_month).days
    while True:
        day = first_month + dt.timedelta(days=rng.randrange(days))
        weight = 1.0 - 0.35 * math.exp(-(((day.timetuple().tm_yday - 220) / 18) ** 2))
        weight -= 0.25 * (day.month == 12 and day.day > 20)
        weight *= 0.25 if day.weekday() >= 5 else 1.0
        if rng.random() < weight:
            return day


def _at(rng, day: dt.date, zone) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(rng.randint(8, 18), rng.randrange(60)), tzinfo=zone)


def _background(rng, patients, establishments, first_month, this_month, zone) -> list[_Planned]:
    """Each patient's exams at their home establishment: no exam elsewhere to repeat. Some
    are opened by another establishment (a second opinion, a transfer), a few several times."""
    planned = []
    modalities = [m[0] for m in MODALITIES]
    shares = [m[1] for m in MODALITIES]
    parts = {m[0]: m[2] for m in MODALITIES}
    for number in range(BACKGROUND_STUDIES):
        patient, home, ipp = patients[number % len(patients)]
        modality = rng.choices(modalities, shares)[0]
        done_at = _at(rng, _seasonal_day(rng, first_month, this_month), zone)
        origins = ESTABLISHMENTS[home.finess][1]
        origin = rng.choices(list(origins), list(origins.values()))[0]
        if number % 29 == 0:
            origin = StudyOrigin.MIGRATION  # a former PACS's exams, brought in bulk
        elif number % 41 == 0:
            origin = StudyOrigin.ARCHIVE  # found by a sync of the regional archive
        opened_by = []
        if rng.random() < 0.3:
            others = [f for f in ESTABLISHMENTS if f != home.finess]
            for finess in rng.sample(others, rng.choice([1, 1, 1, 2])):
                delay = dt.timedelta(hours=rng.choice([2, 5, 20, 40, 120, 300]))
                opened_by.append((finess, done_at + delay))
        planned.append(
            _Planned(
                patient,
                ipp,
                home,
                modality,
                rng.choice(parts[modality]),
                done_at,
                origin,
                opened_by,
            )
        )
    return planned


def _repeats(rng, patients, establishments, first_month, this_month, zone) -> list[_Planned]:
    """Pairs of exams of a patient in two establishments within the window: the later one's
    establishment opened the prior before its exam ("prior consulted, exam still done"),
    did not ("possibly redundant"); and exams of the same kind outside the window or in the
    same establishment, which stay "no prior"."""
    planned = []
    finesses = list(ESTABLISHMENTS)
    kinds = ("consulted", "redundant", "outside_window")
    for index in range(SCENARIOS_PER_KIND * len(kinds)):
        kind = kinds[index % len(kinds)]
        patient, home, ipp = patients[(index * 5 + 3) % len(patients)]
        elsewhere = establishments[finesses[(finesses.index(home.finess) + 1 + index % 3) % 5]]
        modality, body_part = REPEATABLE[index % len(REPEATABLE)]
        low, high = REPEAT_GAP_DAYS[modality]
        # Spread over the year, the second exam before this month.
        first_day = first_month + dt.timedelta(days=10 + (index * 11) % 280)
        gap = rng.randint(low, high) if kind != "outside_window" else high + 30
        second_day = min(first_day + dt.timedelta(days=gap), this_month - dt.timedelta(days=1))
        prior_at, exam_at = _at(rng, first_day, zone), _at(rng, second_day, zone)
        prior_origin = next(iter(ESTABLISHMENTS[home.finess][1]))
        exam_origin = next(iter(ESTABLISHMENTS[elsewhere.finess][1]))
        # The prior is opened by the later exam's establishment before that exam: the
        # physician looked, and the exam was still done (a follow-up, a poor prior).
        opened = []
        if kind == "consulted":
            opened = [(elsewhere.finess, exam_at - dt.timedelta(hours=rng.randint(3, 30)))]
        planned.append(
            _Planned(patient, ipp, home, modality, body_part, prior_at, prior_origin, opened)
        )
        planned.append(
            _Planned(patient, ipp, elsewhere, modality, body_part, exam_at, exam_origin, [])
        )
    return planned


def _write_studies(rng, planned: list[_Planned], now) -> list[Study]:
    """Study, Series and Instance rows (no archive file), archived a little after the exam."""
    studies, series, sizes = [], [], []
    by_modality = {m[0]: m for m in MODALITIES}
    for number, plan in enumerate(planned):
        _m, _s, _parts, (low, high), size = by_modality[plan.modality]
        created_at = plan.done_at + dt.timedelta(minutes=rng.randint(20, 240))
        study_date = plan.done_at.date()
        if plan.origin == StudyOrigin.MIGRATION:
            study_date = study_date.replace(year=study_date.year - rng.randint(2, 8))
        elif plan.origin == StudyOrigin.ARCHIVE:
            created_at += dt.timedelta(days=rng.randint(2, 20))
        created_at = min(created_at, now)
        counts = [rng.randint(low, high) for _ in range(1 if plan.modality in SINGLE_SERIES else 2)]
        patient = plan.patient
        studies.append(
            Study(
                study_instance_uid=_uid("mirc-demo-activity", "study", number),
                patient=patient,
                establishment=plan.establishment,
                identity=StudyIdentity.MATCHED,
                dicom_patient_id=plan.ipp,
                dicom_issuer=plan.establishment.patient_id_issuer,
                dicom_patient_name=f"{patient.birth_name}^{patient.first_names}".upper(),
                dicom_birth_date=f"{patient.birth_date:%Y%m%d}",
                dicom_sex=patient.sex,
                study_date=study_date,
                study_time=plan.done_at.time().replace(tzinfo=None),
                accession_number=f"{ACCESSION_PREFIX}{number:06d}",
                description=f"{plan.modality} {plan.body_part.lower()}",
                modalities=plan.modality,
                body_part=plan.body_part,
                institution_name=plan.establishment.name,
                series_count=len(counts),
                instance_count=sum(counts),
                origin=plan.origin,
                created_at=created_at,
                updated_at=created_at,
            )
        )
        sizes.append((counts, size))
    Study.objects.bulk_create(studies, batch_size=500)
    for number, (study, (counts, _size)) in enumerate(zip(studies, sizes, strict=True)):
        for position, count in enumerate(counts, start=1):
            series.append(
                Series(
                    study=study,
                    series_instance_uid=_uid("mirc-demo-activity", "series", number, position),
                    modality=study.modalities,
                    series_number=position,
                    body_part=study.body_part,
                    instance_count=count,
                )
            )
    Series.objects.bulk_create(series, batch_size=1000)
    # One Instance row per series carries the series' size (the figures sum sizes; a row per
    # image would be tens of thousands of rows for nothing the demo can open).
    instances = []
    by_study = {study.pk: size for study, (_c, size) in zip(studies, sizes, strict=True)}
    for item in series:
        instances.append(
            Instance(
                series=item,
                sop_instance_uid=_uid("mirc-demo-activity", "instance", item.series_instance_uid),
                sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                instance_number=1,
                size=by_study[item.study_id] * item.instance_count,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
            )
        )
    Instance.objects.bulk_create(instances, batch_size=1000)
    return studies


def _openers() -> dict[str, list[tuple[str, str]]]:
    from demo.seed import rpps_for

    result, index = {}, 700
    for finess, (_share, _origins, names) in ESTABLISHMENTS.items():
        result[finess] = []
        for name in names:
            result[finess].append((name, rpps_for(index)))
            index += 1
    return result


def _write_opens(rng, planned, studies, now) -> int:
    """The trail's image accesses (DCM 110103) of the studies by other establishments, at
    their past dates, chained as any event (portal.audit.record_past)."""
    openers = _openers()
    events = []
    for plan, study in zip(planned, studies, strict=True):
        for finess, when in plan.opened_by:
            when = max(when, study.created_at + dt.timedelta(minutes=5))
            if when >= now:
                continue
            name, rpps = rng.choice(openers[finess])
            events.append(
                AuditEvent(
                    occurred_at=when,
                    event_id=AuditEventId.INSTANCES_ACCESSED,
                    action=AuditAction.READ,
                    outcome=AuditOutcome.SUCCESS,
                    actor_name=name,
                    actor_rpps=rpps,
                    actor_establishment=finess,
                    object_type="imaging.study",
                    object_id=str(study.pk),
                    patient=plan.patient,
                    purpose=AuditPurpose.CARE,
                    detail={"demo": "regional activity"},
                )
            )
    return audit.record_past(events)


def _write_prefetches(rng, planned, studies, establishments, now) -> int:
    """Priors sent to the PACS of the establishments that declared one, at an admission of a
    patient who had exams elsewhere."""
    requests, items = [], []
    for finess, ae_title in PREFETCHING.items():
        establishment = establishments[finess]
        priors = [
            study
            for plan, study in zip(planned, studies, strict=True)
            if plan.establishment.finess != finess and study.origin != StudyOrigin.MIGRATION
        ]
        for prior in rng.sample(priors, min(len(priors), 14)):
            when = prior.created_at + dt.timedelta(days=rng.randint(3, 40))
            if when >= now:
                continue
            request = PrefetchRequest(
                patient_id=prior.patient_id,
                establishment=establishment,
                trigger=rng.choice([PrefetchTrigger.A01, PrefetchTrigger.A05]),
                destination_ae_title=ae_title,
                state=PrefetchRequest.State.SENT,
                instances_total=prior.instance_count,
                instances_sent=prior.instance_count,
                attempts=1,
                created_at=when,
                updated_at=when + dt.timedelta(minutes=3),
                finished_at=when + dt.timedelta(minutes=3),
            )
            requests.append(request)
            items.append((request, prior))
    PrefetchRequest.objects.bulk_create(requests)
    PrefetchItem.objects.bulk_create(
        PrefetchItem(request=request, study=prior, sent=True, instances_sent=prior.instance_count)
        for request, prior in items
    )
    return len(requests)


# Hospital doctors of the demo who shared images with a doctor outside the portal over the year
# (the recipients are fictitious, outside the region), and made DICOMDIR packages.
SHARERS = ("c.martin@mirc.test", "n.faure@mirc.test", "p.lefevre@mirc.test")
RECIPIENTS = (
    ("Dr Hélène Garnier", "h.garnier@chu-lyon.test"),
    ("Dr Paul Verne", "p.verne@aphp.test"),
    ("Dr Inès Roux", "i.roux@chu-nantes.test"),
)


def _write_city_doctors(rng, planned, studies, now) -> int:
    """The city doctors' side of the year: the demo's GPs opening results of the region (their
    consultations), shares made by hospital doctors with doctors outside the portal and their
    openings, and DICOMDIR packages made. Shares and packages are of the regional patients
    (no care relationship: nobody of the demo opens them); the packages are past their keeping
    time (expired: no file), the shares past their expiry."""
    gps = list(
        Professional.objects.filter(specialty=Specialty.GENERAL_PRACTICE, user__is_active=True)
        .select_related("user")
        .order_by("pk")
    )
    sharers = {
        p.user.email: p
        for p in Professional.objects.filter(user__email__in=SHARERS).select_related("user")
    }
    candidates = [
        (plan, study)
        for plan, study in zip(planned, studies, strict=True)
        if study.origin != StudyOrigin.MIGRATION
    ]
    events = []
    for plan, study in rng.sample(candidates, min(len(candidates), 40)) if gps else []:
        gp = rng.choice(gps)
        when = study.created_at + dt.timedelta(hours=rng.randint(6, 24 * 20))
        if when >= now:
            continue
        establishment = gp.primary_establishment()
        events.append(
            AuditEvent(
                occurred_at=when,
                event_id=AuditEventId.INSTANCES_ACCESSED,
                action=AuditAction.READ,
                outcome=AuditOutcome.SUCCESS,
                actor=gp.user,
                actor_name=gp.display_name,
                actor_rpps=gp.rpps,
                actor_establishment=establishment.finess if establishment else "",
                object_type="imaging.study",
                object_id=str(study.pk),
                patient=plan.patient,
                purpose=AuditPurpose.CARE,
                detail={"demo": "regional activity", "view": "viewer"},
            )
        )
    shares, packages = [], []
    for number, (plan, study) in enumerate(rng.sample(candidates, min(len(candidates), 18))):
        author = sharers.get(SHARERS[number % len(SHARERS)])
        if author is None:
            continue
        created = study.created_at + dt.timedelta(days=rng.randint(1, 10))
        if created + dt.timedelta(days=31) >= now:
            continue
        name, email = RECIPIENTS[number % len(RECIPIENTS)]
        shares.append(
            (
                Share(
                    patient=plan.patient,
                    author=author.user,
                    recipient_name=name,
                    recipient_email=email,
                    note="",
                    created_at=created,
                    expires_at=created + dt.timedelta(days=30),
                    view_count=0,
                    link_token_hash=f"{rng.getrandbits(256):064x}",
                ),
                study,
            )
        )
        if number % 2 == 0:
            packages.append(
                StudyPackage(
                    patient=plan.patient,
                    requested_by=author.user,
                    label="DICOMDIR",
                    status=StudyPackage.Status.EXPIRED,
                    done=study.instance_count,
                    total=study.instance_count,
                    created_at=created,
                    updated_at=created,
                    finished_at=created + dt.timedelta(minutes=4),
                    expires_at=created + dt.timedelta(days=7),
                )
            )
    Share.objects.bulk_create([share for share, _study in shares])
    for share, study in shares:
        share.studies.add(study)
        for opening in range(rng.randint(1, 4)):
            when = share.created_at + dt.timedelta(hours=2 + 30 * opening)
            share.view_count += 1
            events.append(
                AuditEvent(
                    occurred_at=when,
                    event_id=AuditEventId.PATIENT_RECORD,
                    action=AuditAction.READ,
                    outcome=AuditOutcome.SUCCESS,
                    actor_name=f"partage {share.pk}: {share.recipient_name} "
                    f"<{share.recipient_email}>",
                    object_type="imaging.share",
                    object_id=str(share.pk),
                    patient=share.patient,
                    purpose=AuditPurpose.CARE,
                    detail={"share": share.pk, "view": "contents", "demo": "regional activity"},
                )
            )
    Share.objects.bulk_update([share for share, _study in shares], ["view_count"])
    for package in StudyPackage.objects.bulk_create(packages):
        package.studies.add(
            next(study for share, study in shares if share.patient_id == package.patient_id)
        )
    audit.record_past(events)
    return len(events) + len(shares) + len(packages)
