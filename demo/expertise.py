"""Demo tele-expertise: the teleradiology pool of CHRU de Tours answering CH Bourges and the
Hôpitaux de Chartres, and the dermatology and cardiology pools answering the GPs of the
Vierzon practice, with requests in every state spread over the last five months.

Who does what (password ``mirc-demo-2026``, e-mail ``<login>@mirc.test``):

* ``j.moreau`` (already in the demo) and ``b.vidal``, radiologists of CHRU de Tours: the
  experts of the teleradiology pool; ``l.fabre`` (dermatology) and ``r.lemaire`` (cardiology),
  CHRU de Tours: the experts of their pools.
* ``v.morel``, the CHRU's tele-expertise office (coordinator, no RPPS): coordinates the three
  pools (she is alerted when a request is overdue) and, as the billing office, exports the
  acts: permission ``expertise.export_acts`` through the group "Facturation de la
  télé-expertise". She follows no patient: she sees the requests of her pools (and, through
  ``expertise.selectors``, the studies attached to them), never a patient's record.
* ``d.masson`` (geriatrics, CH Bourges) and ``a.renard`` (pulmonology, Hôpitaux de Chartres)
  send teleradiology requests with their patients' CT; the GPs ``p.lemoine`` and ``s.benali``
  send photos to dermatology and ECG tracings to cardiology.
* ``m.dumas``, of the regional programme: the only holder of ``expertise.view_indicators``
  and ``rcp.view_indicators`` (group "Programme régional"), the indicators of every pool and
  every committee; no patient record either.

The requests are played through ``expertise.services`` as the users would, then each step is
dated back (request columns, timeline, messages, files, report, acts) so that the delays look
real. The audit trail is left as written: it records when the seed ran. Then
``deadlines_watch`` runs once, as Celery beat would: one urgent request is reminded, one
overdue request is escalated to the coordinator.

The live story: p.lemoine's patient :func:`live_story_patient` has a chest CT from the
Clinique des Bords de Loire and no request yet; p.lemoine sends it to the teleradiology pool
in front of the audience. Seeded once, like ``demo.rcp``: when the teleradiology pool exists,
a second run changes nothing. Photos and tracings are drawn here: no real patient data.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import zlib
from zoneinfo import ZoneInfo

import numpy as np
from django.contrib.auth.hashers import make_password
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone
from PIL import Image

from demo import synthetic
from demo.imaging import _identity, _patient, _Result
from demo.seed import DEMO_PASSWORD, demo_professional
from expertise import services
from expertise.deadlines import deadlines_watch
from expertise.models import (
    Act,
    Attachment,
    Message,
    Pool,
    PoolMember,
    Report,
    Request,
    RequestEvent,
    Urgency,
)
from expertise.notifications import request_url
from imaging.models import Study
from imaging.services import ingest_parsed
from imaging.validation import UploadedFile, parse_dicom_files
from portal.administration import role_grant_by_system
from portal.audit import Actor
from portal.models import (
    Affiliation,
    CareRelationship,
    CareRole,
    Establishment,
    Notification,
    Patient,
    Profession,
    Professional,
    Specialty,
    User,
)
from portal.services import care_relationship_add

PARIS = ZoneInfo("Europe/Paris")
TOURS, BOURGES, CHARTRES, BLOIS = "370000481", "180000028", "280000134", "410009990"
State = Request.State
Outcome = Request.Outcome
Role = PoolMember.Role
Decline = services.DeclineTo


# login, title, first name, last name, profession, specialty, FINESS (None: no establishment).
# RPPS numbers continue the portal demo's test range (997…) from index 101.
PEOPLE = [
    ("b.vidal", "Dr", "Benoît", "Vidal", Profession.PHYSICIAN, Specialty.RADIOLOGY, TOURS),
    ("l.fabre", "Dr", "Louise", "Fabre", Profession.PHYSICIAN, Specialty.DERMATOLOGY, TOURS),
    ("r.lemaire", "Dr", "Romain", "Lemaire", Profession.PHYSICIAN, Specialty.CARDIOLOGY, TOURS),
    ("d.masson", "Dr", "Damien", "Masson", Profession.PHYSICIAN, Specialty.GERIATRICS, BOURGES),
    ("a.renard", "Dr", "Aurélie", "Renard", Profession.PHYSICIAN, Specialty.PULMONOLOGY, CHARTRES),
    ("v.morel", "Mme", "Valérie", "Morel", Profession.COORDINATOR, "", TOURS),
    ("m.dumas", "Mme", "Mathilde", "Dumas", Profession.OTHER, "", None),
]

POOLS = [
    (
        "Téléradiologie — CHRU de Tours",
        Specialty.RADIOLOGY,
        [("j.moreau", Role.EXPERT), ("b.vidal", Role.EXPERT), ("v.morel", Role.COORDINATOR)],
    ),
    (
        "Dermatologie — CHRU de Tours",
        Specialty.DERMATOLOGY,
        [("l.fabre", Role.EXPERT), ("v.morel", Role.COORDINATOR)],
    ),
    (
        "Cardiologie — CHRU de Tours",
        Specialty.CARDIOLOGY,
        [("r.lemaire", Role.EXPERT), ("v.morel", Role.COORDINATOR)],
    ),
]
TELERADIOLOGY = POOLS[0][0]

# The requesters' patients: (referring doctor of the demo's care group, ranks), and where the
# requester sees them. Not Dr Martin's thoracic patients: the browser tests expect her imaging
# page to open on the imaging demo's patient.
BOURGES_PATIENTS = ("c.dubois@mirc.test", range(1, 9), BOURGES)  # digestive group
CHARTRES_PATIENTS = ("n.faure@mirc.test", range(0, 6), CHARTRES)  # pulmonary group
LIVE_STORY = ("v.carpentier@mirc.test", 0)  # urology group; p.lemoine is the GP


def live_story_patient() -> Patient | None:
    """The patient p.lemoine sends to teleradiology live: a chest CT, no request."""
    return _patient(*LIVE_STORY)


def seed(stdout=None) -> int:
    if Pool.objects.filter(name=TELERADIOLOGY).exists():
        return 0
    if not Professional.objects.filter(user__email="p.lemoine@mirc.test").exists():
        return 0  # the portal's demo data first
    with transaction.atomic():
        demo = _Demo()
        demo.play()
        deadlines_watch(now=demo.now)
    # After the commit: the reports' PDFs (rendered then, when Celery runs eagerly) notify too.
    _mark_old_notifications_read(demo.now)
    if stdout is not None:
        _summary(stdout)
    return Request.objects.count()


# --- People, pools, patients -----------------------------------------------------------------


def _people() -> dict[str, Professional]:
    password_hash = make_password(DEMO_PASSWORD)
    for index, (login, title, first, last, profession, specialty, finess) in enumerate(
        PEOPLE, start=101
    ):
        professional = demo_professional(
            login=login,
            title=title,
            first=first,
            last=last,
            profession=profession,
            specialty=specialty,
            index=index,
            password_hash=password_hash,
        )
        if finess:
            Affiliation.objects.get_or_create(
                professional=professional,
                establishment=Establishment.objects.get(finess=finess),
                defaults={"is_primary": True},
            )
    # Roles the tele-expertise app declares (expertise.apps.portal_roles), granted as the
    # administration pages would: the billing office of Tours, the regional programme.
    seeding = Actor.system("seed_demo")
    role_grant_by_system(
        role_code="billing", holder=User.objects.get(email="v.morel@mirc.test"), by=seeding
    )
    role_grant_by_system(
        role_code="programme", holder=User.objects.get(email="m.dumas@mirc.test"), by=seeding
    )
    return {
        p.user.email.split("@")[0]: p
        for p in Professional.objects.select_related("user").filter(
            user__email__endswith="@mirc.test"
        )
    }


def _pools(people) -> dict[str, Pool]:
    tours = Establishment.objects.get(finess=TOURS)
    pools = {}
    for name, specialty, members in POOLS:
        pool = Pool.objects.create(name=name, specialty=specialty, establishment=tours)
        for login, role in members:
            PoolMember.objects.create(pool=pool, professional=people[login], role=role)
        pools[specialty] = pool
    return pools


def _care_team(doctor: Professional, group) -> list[Patient]:
    """The requester's patients: the doctor joins their care team at their hospital."""
    referring, ranks, finess = group
    establishment = Establishment.objects.get(finess=finess)
    patients = [_patient(referring, rank) for rank in ranks]
    for patient in patients:
        care_relationship_add(
            patient=patient,
            professional=doctor,
            role=CareRole.CARE_TEAM,
            establishment=establishment,
            by=Actor.system("seed_demo"),
        )
    return patients


def _gp_patients(gp: Professional) -> list[Patient]:
    ids = (
        CareRelationship.objects.filter(professional=gp, role=CareRole.GP, ended_at__isnull=True)
        .order_by("patient_id")
        .values_list("patient_id", flat=True)
    )
    return list(Patient.objects.filter(pk__in=list(ids)).order_by("pk"))


# --- Synthetic files ---------------------------------------------------------------------------


def _ct(
    patient: Patient, *, finess: str, day: dt.date, description: str, report: str = ""
) -> Study:
    """A small chest CT (48 slices of 5 mm) of ``patient`` done at ``finess`` on ``day``,
    with its Basic Text SR report when ``report`` is given (PS3.3 A.35.1)."""
    establishment = Establishment.objects.get(finess=finess)
    identity = _identity(patient, establishment)
    spec = synthetic.StudySpec(
        study_date=day,
        institution_name=establishment.name,
        description=description,
        accession_number=f"{establishment.patient_id_issuer[:4]}{day:%y%m%d}{patient.pk:03d}",
    )
    # The report must land in the study of the images: fix its UID in the spec.
    spec = synthetic.StudySpec(
        **{
            **spec.__dict__,
            "study_instance_uid": synthetic.study_instance_uid(patient=identity, spec=spec),
        }
    )
    datasets = synthetic.ct_series(
        patient=identity,
        study=spec,
        slices=48,
        rows=256,
        columns=256,
        slice_thickness=5.0,
        description="Thorax sans injection, coupes de 5 mm",
    )
    if report:
        datasets.append(
            synthetic.sr_report(
                patient=identity,
                study=spec,
                text=report,
                author="BOT^Radiologue démo",
                referenced_series=datasets,
            )
        )
    files = [UploadedFile(f"{n}.dcm", synthetic.to_bytes(ds)) for n, ds in enumerate(datasets)]
    # One sandboxed check for the whole series, not one child process per file.
    parsed = [(_Result(), result) for result in parse_dicom_files(files)]
    ingest_parsed(parsed=parsed, target=patient, actor=Actor.system("seed_demo"))
    return Study.objects.get(study_instance_uid=spec.study_instance_uid)


def skin_photo(seed: int, *, lesion_mm: float = 6.0) -> bytes:
    """A JPEG of skin with a darker, irregular spot: drawn, not photographed."""
    rng = np.random.default_rng(seed)
    height, width = 480, 640
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 0.92 + 0.08 * (x / width) - 0.06 * (y / height)
    skin = np.array([226, 178, 150], dtype=np.float32) * (0.95 + 0.1 * rng.random())
    image = skin[None, None, :] * light[..., None]
    image += rng.normal(0, 3.5, (height, width, 1))
    # An irregular border: the radius wobbles with the angle (asymmetry, notches).
    cx, cy = width / 2 + rng.uniform(-40, 40), height / 2 + rng.uniform(-30, 30)
    radius = lesion_mm * 9
    angle = np.arctan2(y - cy, x - cx)
    wobble = 1 + sum(
        rng.uniform(0.03, 0.12) * np.sin(k * angle + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)
    )
    distance = np.hypot(x - cx, (y - cy) * 1.15) / (radius * wobble)
    spot = np.clip((1.1 - distance) * 6, 0, 1)[..., None]
    brown = np.array([112, 70, 48], dtype=np.float32) * (
        0.85 + 0.3 * rng.random((height, width, 1))
    )
    image = image * (1 - spot) + brown * spot
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _pdf_string(text: str) -> str:
    """A PDF literal string (ISO 32000-1, 7.3.4.2); the page encodes it in WinAnsi."""
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _ecg_wave(t: float, beats: list[float], *, atrial_fibrillation: bool, wide_qrs: bool):
    """Millivolts at ``t`` seconds: P, QRS and T waves as Gaussians around each beat."""

    def bump(centre, width, height):
        return height * math.exp(-(((t - centre) / width) ** 2) / 2)

    value = 0.04 * math.sin(2 * math.pi * 6.3 * t) if atrial_fibrillation else 0.0
    for beat in beats:
        if abs(t - beat) > 0.6:
            continue
        if not atrial_fibrillation:
            value += bump(beat - 0.17, 0.025, 0.15)
        value += bump(beat - 0.03, 0.008, -0.1) + bump(beat, 0.01, 1.0)
        value += bump(beat + 0.03, 0.01, -0.25) + bump(beat + 0.26, 0.045, 0.3)
        if wide_qrs:
            value += bump(beat + 0.07, 0.015, 0.45)
    return value


def ecg_pdf(*, title: str, rate: int, seed: int, atrial_fibrillation=False, wide_qrs=False):
    """A one-page PDF 1.4 (A4 landscape) of a synthetic 3-lead ECG at 25 mm/s and 10 mm/mV,
    drawn here: no device nor patient behind it. Written by hand (ISO 32000-1, 7.5: header,
    objects, cross-reference table, trailer), Helvetica being one of the standard 14 fonts.
    ``wide_qrs`` adds an R' wave (right bundle branch block); ``atrial_fibrillation`` drops
    the P waves, makes the rhythm irregular and adds fibrillation waves."""
    rng = np.random.default_rng(seed)
    mm = 72 / 25.4
    left, bottom, right, top = 30.0, 50.0, 812.0, 520.0
    seconds = (right - left) / (25 * mm)
    beats, moment = [], 0.3
    while moment < seconds:
        beats.append(moment)
        interval = 60 / rate
        moment += interval * (rng.uniform(0.6, 1.4) if atrial_fibrillation else 1.0)
    ops = ["0.98 0.78 0.78 RG 0.2 w"]
    for step in range(int((right - left) / mm) + 1):
        x = left + step * mm
        ops.append(f"{0.6 if step % 5 == 0 else 0.15} w {x:.1f} {bottom} m {x:.1f} {top} l S")
    for step in range(int((top - bottom) / mm) + 1):
        y = bottom + step * mm
        ops.append(f"{0.6 if step % 5 == 0 else 0.15} w {left} {y:.1f} m {right} {y:.1f} l S")
    ops.append("0 0 0 RG 0.9 w 1 j")
    for lead, (baseline, gain) in {"DI": (440, 0.7), "DII": (300, 1.0), "V1": (160, -0.6)}.items():
        points = []
        for sample in range(int(seconds * 200)):
            t = sample / 200
            mv = _ecg_wave(t, beats, atrial_fibrillation=atrial_fibrillation, wide_qrs=wide_qrs)
            points.append(f"{left + t * 25 * mm:.1f} {baseline + gain * mv * 10 * mm:.1f}")
        ops.append(points[0] + " m " + " l ".join(points[1:]) + " l S")
        ops.append(f"BT /F1 10 Tf {left + 4} {baseline + 40} Td {_pdf_string(lead)} Tj ET")
    lines = [
        (16, 560, title),
        (10, 542, f"25 mm/s — 10 mm/mV — fréquence d'environ {rate}/min"),
        (9, 30, "Tracé de démonstration du portail MIRC : patient fictif, aucune donnée réelle."),
    ]
    for size, y, text in lines:
        ops.append(f"BT /F1 {size} Tf {left} {y} Td {_pdf_string(text)} Tj ET")
    content = zlib.compress("\n".join(ops).encode("cp1252"))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 842 595] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content)
        + content
        + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


# --- Stories ---------------------------------------------------------------------------------


class _Story:
    """One request played through the services, each step dated back to when it happened.

    The draft is written 20 minutes before ``sent_at`` and sent then (unless ``draft``); the
    later steps are dated ``hours`` after the sending. Steps are played in order at moments in
    the past, so whatever a step wrote is dated after its moment (the real time of the seed):
    that is what gets the moment."""

    def __init__(
        self, demo, *, requester, patient, specialty, sent_at, draft=False, files=(), **form
    ):
        self.demo = demo
        self.by = demo.actor(requester)
        written = sent_at - dt.timedelta(minutes=20)
        self.request = services.request_create(
            patient=patient,
            pool=demo.pools[specialty],
            by=self.by,
            patient_informed=True,
            consent_date=timezone.localdate(written),
            consent_method="oral",
            **form,
        )
        for kind, title, name, content in files:
            services.attachment_add(
                request=self.request,
                by=self.by,
                kind=kind,
                title=title,
                upload=SimpleUploadedFile(name, content),
            )
        self._dated(written, created_at=written)
        if not draft:
            services.request_send(request=self.request, by=self.by, now=sent_at)
            self._dated(sent_at)

    def _dated(self, moment: dt.datetime, **columns) -> None:
        request = self.request
        RequestEvent.objects.filter(request=request, at__gt=moment).update(at=moment)
        Message.objects.filter(request=request, created_at__gt=moment).update(created_at=moment)
        Attachment.objects.filter(request=request, uploaded_at__gt=moment).update(
            uploaded_at=moment
        )
        if columns:
            Request.objects.filter(pk=request.pk).update(**columns)
        request.refresh_from_db()

    def _after(self, hours: float) -> dt.datetime:
        return self.request.sent_at + dt.timedelta(hours=hours)

    def _expert(self) -> Actor:
        return Actor(user=self.request.expert)

    def claim(self, expert: str, *, hours: float) -> None:
        services.request_claim(request=self.request, by=self.demo.actor(expert))
        self._dated(self._after(hours), accepted_at=self._after(hours))

    def ask(self, question: str, *, hours: float) -> None:
        services.request_ask_information(request=self.request, by=self._expert(), question=question)
        self._dated(self._after(hours), info_requested_at=self._after(hours))

    def reply(self, body: str, *, hours: float) -> None:
        """The requester answers the expert's question: the deadline moves by the wait."""
        moment = self._after(hours)
        due_at = self.request.due_at + (moment - self.request.info_requested_at)
        services.message_post(request=self.request, by=self.by, body=body)
        self._dated(moment, due_at=due_at)

    def expert_writes(self, body: str, *, hours: float) -> None:
        services.message_post(request=self.request, by=self._expert(), body=body)
        self._dated(self._after(hours))

    def decline(self, expert: str, reason: str, *, hours: float, to: str) -> None:
        services.request_decline(
            request=self.request, by=self.demo.actor(expert), reason=reason, to=to
        )
        self._dated(self._after(hours))

    def report_draft(self, report: dict, *, hours: float) -> None:
        services.report_save(request=self.request, by=self._expert(), revision=None, **report)
        Report.objects.filter(request=self.request).update(updated_at=self._after(hours))
        self._dated(self._after(hours))

    def answer(self, report: dict, *, hours: float) -> None:
        moment = self._after(hours)
        saved = services.report_save(
            request=self.request, by=self._expert(), revision=None, **report
        )
        services.report_sign_and_send(
            request=self.request, by=self._expert(), revision=saved.revision
        )
        Report.objects.filter(request=self.request).update(updated_at=moment, signed_at=moment)
        Act.objects.filter(request=self.request).update(
            act_date=timezone.localdate(moment), created_at=moment
        )
        self._dated(moment, answered_at=moment)

    def close(self, outcome: str, *, hours: float) -> None:
        services.request_close(request=self.request, by=self.by, outcome=outcome)
        self._dated(self._after(hours), closed_at=self._after(hours))

    def cancel(self, reason: str, *, hours: float) -> None:
        services.request_cancel(request=self.request, by=self.by, reason=reason)
        self._dated(self._after(hours), cancelled_at=self._after(hours))


class _Demo:
    def __init__(self):
        self.now = timezone.now()
        self.people = _people()
        self.pools = _pools(self.people)

    def actor(self, login: str) -> Actor:
        return Actor(user=self.people[login].user)

    def day(self, days_ago: int, hour: int, minute: int = 0) -> dt.datetime:
        """``days_ago`` days before today at a local hour: requests sent in office hours."""
        day = timezone.localdate(self.now) - dt.timedelta(days=days_ago)
        return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=PARIS)

    def ago(self, hours: float) -> dt.datetime:
        return self.now - dt.timedelta(hours=hours)

    def play(self):
        self._live_story()
        self._teleradiology()
        self._dermatology()
        self._cardiology()

    def _live_story(self):
        _ct(
            live_story_patient(),
            finess=BLOIS,
            day=timezone.localdate(self.day(9, 10)),
            description="TDM thoracique (toux persistante)",
            report="Nodule solide de 8 mm du segment apical du lobe supérieur droit, non "
            "calcifié. Pas d'adénopathie médiastinale. Avis spécialisé souhaitable.",
        )

    def _teleradiology(self):
        """CH Bourges and the Hôpitaux de Chartres ask CHRU de Tours, oldest first."""
        bourges = _care_team(self.people["d.masson"], BOURGES_PATIENTS)
        chartres = _care_team(self.people["a.renard"], CHARTRES_PATIENTS)

        def masson(index, sent_at, words, **form):
            return self._ct_story("d.masson", bourges[index], BOURGES, sent_at, words, **form)

        def renard(index, sent_at, words, **form):
            return self._ct_story("a.renard", chartres[index], CHARTRES, sent_at, words, **form)

        story = renard(0, self.day(150, 10, 20), "nodule")
        story.claim("j.moreau", hours=2)
        story.answer(REPORTS["nodule"], hours=28)
        story.close(Outcome.AVOIDED, hours=75)

        story = masson(0, self.day(125, 15, 5), "pneumonia")
        story.claim("b.vidal", hours=0.7)
        story.answer(REPORTS["pneumonia"], hours=9)
        story.close(Outcome.NOT_AVOIDED, hours=26)

        story = renard(1, self.day(96, 11, 40), "embolism", urgency=Urgency.URGENT)
        story.claim("j.moreau", hours=0.4)
        story.answer(REPORTS["embolism"], hours=3)
        story.close(Outcome.AVOIDED, hours=48)

        story = masson(1, self.day(70, 9, 15), "mass")
        story.claim("b.vidal", hours=6)
        story.ask(
            "Le patient a-t-il un scanner thoracique antérieur pour comparer la taille de la "
            "lésion ? Si oui, où a-t-il été fait ?",
            hours=7,
        )
        story.reply(
            "Pas de scanner antérieur retrouvé. Radiographie thoracique de 2024 jugée normale "
            "d'après le dossier du médecin traitant.",
            hours=26,
        )
        story.answer(REPORTS["mass"], hours=29)
        story.close(Outcome.UNSURE, hours=122)

        # Addressed by name to the radiologist who read the previous CT.
        vidal = self.people["b.vidal"].user
        story = renard(2, self.day(40, 14, 30), "emphysema", expert=vidal)
        story.claim("b.vidal", hours=3)
        story.answer(REPORTS["emphysema"], hours=20)
        story.close(Outcome.AVOIDED, hours=44)

        story = masson(7, self.day(12, 10, 0), "effusion")
        story.cancel(
            "Patient transféré au CHRU de Tours : le scanner y est relu sur place.", hours=3
        )

        story = masson(2, self.day(5, 16, 10), "effusion")
        story.claim("b.vidal", hours=17)
        story.answer(REPORTS["effusion"], hours=50)

        story = masson(5, self.day(4, 11, 0), "thin_slices")
        story.claim("j.moreau", hours=2)
        story.decline(
            "j.moreau",
            "Série transmise en coupes de 5 mm seulement : le nodule ne peut pas être "
            "caractérisé. Merci de joindre la reconstruction en coupes fines (1 mm) et de "
            "renvoyer la demande.",
            hours=2.5,
            to=Decline.REQUESTER,
        )

        # Overdue by four hours: claimed, handed back to the pool, nobody took it since.
        story = masson(6, self.ago(3 * 24 + 4), "fracture", urgency=Urgency.PRIORITY)
        story.claim("b.vidal", hours=2)
        story.decline(
            "b.vidal",
            "Absent à partir de demain (congés) : je remets la demande dans la file.",
            hours=5,
            to=Decline.POOL,
        )

        story = renard(4, self.day(2, 9, 40), "contrast")
        story.claim("j.moreau", hours=4)
        story.ask(
            "La série injectée n'a pas été transmise : pouvez-vous l'ajouter, ou préciser si "
            "l'examen a été fait sans injection ?",
            hours=5,
        )

        story = renard(3, self.day(1, 10, 15), "pneumothorax", urgency=Urgency.URGENT)
        story.claim("j.moreau", hours=0.5)
        story.answer(REPORTS["pneumothorax"], hours=2)

        story = masson(3, self.day(1, 8, 50), "pneumonia", urgency=Urgency.PRIORITY)
        story.claim("b.vidal", hours=3)
        story.expert_writes(
            "Scanner bien reçu, je vous envoie le compte rendu en fin de journée.", hours=3.1
        )
        story.report_draft(REPORTS["pneumonia"], hours=5)

        # Due in five hours: the pool is reminded.
        renard(5, self.ago(19), "embolism", urgency=Urgency.URGENT)
        # Just arrived, urgent: first in the queue.
        masson(4, self.ago(0.6), "hemoptysis", urgency=Urgency.URGENT)
        # Ready to send: the six-month control of the first request.
        control = "TDM thoracique de contrôle à 6 mois"
        renard(0, self.day(1, 17, 30), "control", draft=True, ct=control)

    def _ct_story(self, requester, patient, finess, sent_at, words, *, ct="", **form) -> _Story:
        """A request on the CT the requester's hospital did that day."""
        study = _ct(
            patient,
            finess=finess,
            day=timezone.localdate(sent_at),
            description=ct or "TDM thoracique sans injection",
        )
        return _Story(
            self,
            requester=requester,
            patient=patient,
            specialty=Specialty.RADIOLOGY,
            sent_at=sent_at,
            studies=[study],
            **RADIOLOGY[words],
            **form,
        )

    def _dermatology(self):
        """The GPs of Vierzon send photos of skin lesions."""
        lemoine = _gp_patients(self.people["p.lemoine"])
        benali = _gp_patients(self.people["s.benali"])

        def photo_story(gp, patient, sent_at, words, *, lesion_mm=6.0, **form):
            photo = skin_photo(patient.pk, lesion_mm=lesion_mm)
            return _Story(
                self,
                requester=gp,
                patient=patient,
                specialty=Specialty.DERMATOLOGY,
                sent_at=sent_at,
                files=[(Attachment.Kind.PHOTO, "Photo de la lésion", "lesion.jpg", photo)],
                **DERMATOLOGY[words],
                **form,
            )

        story = photo_story("p.lemoine", lemoine[5], self.day(110, 18, 30), "keratosis")
        story.claim("l.fabre", hours=15)
        story.answer(REPORTS["keratosis"], hours=40)
        story.close(Outcome.AVOIDED, hours=62)

        story = photo_story(
            "s.benali",
            benali[4],
            self.day(55, 12, 45),
            "melanoma",
            lesion_mm=9.0,
            urgency=Urgency.PRIORITY,
        )
        story.claim("l.fabre", hours=5)
        story.answer(REPORTS["melanoma"], hours=21)
        story.close(Outcome.NOT_AVOIDED, hours=70)

        story = photo_story("s.benali", benali[11], self.day(6, 19, 0), "keratosis")
        story.claim("l.fabre", hours=38)
        story.answer(REPORTS["keratosis"], hours=40)

        story = photo_story("p.lemoine", lemoine[9], self.day(3, 14, 0), "pregnancy")
        story.claim("l.fabre", hours=20)
        story.ask(
            "Pouvez-vous joindre une photo plus nette, avec une règle graduée à côté de la "
            "lésion, et si possible une vue en dermoscopie ?",
            hours=20.5,
        )

        photo_story("p.lemoine", lemoine[15], self.day(1, 12, 30), "nevus", lesion_mm=4.0)

    def _cardiology(self):
        """The GPs of Vierzon send resting ECGs."""
        lemoine = _gp_patients(self.people["p.lemoine"])
        benali = _gp_patients(self.people["s.benali"])

        def ecg_story(gp, patient, sent_at, words, ecg, **form):
            tracing = ecg_pdf(title="ECG de repos — tracé de démonstration", seed=patient.pk, **ecg)
            return _Story(
                self,
                requester=gp,
                patient=patient,
                specialty=Specialty.CARDIOLOGY,
                sent_at=sent_at,
                files=[(Attachment.Kind.DOCUMENT, "ECG de repos", "ecg.pdf", tracing)],
                **CARDIOLOGY[words],
                **form,
            )

        story = ecg_story("s.benali", benali[5], self.day(80, 17, 50), "rbbb", RBBB)
        story.claim("r.lemaire", hours=15.5)
        story.answer(REPORTS["rbbb"], hours=22)
        story.close(Outcome.AVOIDED, hours=45)

        story = ecg_story(
            "p.lemoine", lemoine[6], self.day(20, 9, 10), "af", AF, urgency=Urgency.PRIORITY
        )
        story.claim("r.lemaire", hours=3)
        story.answer(REPORTS["af"], hours=8)
        story.close(Outcome.NOT_AVOIDED, hours=50)

        story = ecg_story("p.lemoine", lemoine[7], self.day(9, 11, 20), "chest_pain", SINUS)
        story.decline(
            "r.lemaire",
            "Douleur thoracique récente : ce n'est pas une indication de télé-expertise. Le "
            "patient doit être adressé aux urgences (centre 15) sans délai.",
            hours=1.5,
            to=Decline.REQUESTER,
        )

        story = ecg_story("s.benali", benali[10], self.day(7, 10, 0), "bradycardia", SLOW)
        story.cancel("Patient vu entre-temps en consultation de cardiologie à Vierzon.", hours=20)

        story = ecg_story("s.benali", benali[6], self.day(2, 18, 40), "bradycardia", SLOW)
        story.claim("r.lemaire", hours=15)

        ecg_story("p.lemoine", lemoine[8], self.day(1, 17, 30), "preop", SINUS, draft=True)


SINUS = {"rate": 76}
SLOW = {"rate": 58}
RBBB = {"rate": 68, "wide_qrs": True}
AF = {"rate": 96, "atrial_fibrillation": True}


def _mark_old_notifications_read(now: dt.datetime) -> None:
    """What happened to requests that are over, or quiet for three days, was read long ago."""
    old = Request.objects.annotate(last_step=Max("events__at")).filter(
        Q(state__in=[State.CLOSED, State.CANCELLED]) | Q(last_step__lt=now - dt.timedelta(days=3))
    )
    Notification.objects.filter(url__in=[request_url(r) for r in old]).update(read_at=now)


# What each demo login does in tele-expertise, for the summary.
ROLES = {
    "j.moreau": "expert, teleradiology",
    "b.vidal": "expert, teleradiology",
    "l.fabre": "expert, dermatology",
    "r.lemaire": "expert, cardiology",
    "v.morel": "coordinator of the three pools, exports the acts (billing office)",
    "m.dumas": "regional programme: indicators of every pool and every RCP committee",
    "d.masson": "requester (CH Bourges): teleradiology",
    "a.renard": "requester (Chartres): teleradiology",
    "p.lemoine": "requester (GP): dermatology, cardiology, and the live teleradiology story",
    "s.benali": "requester (GP): dermatology, cardiology",
}


def _summary(stdout) -> None:
    for pool in Pool.objects.order_by("pk"):
        stdout.write(f"  {pool.name}: {pool.requests.count()} requests")
    stdout.write("  Tele-expertise logins (same password):")
    for login, role in ROLES.items():
        stdout.write(f"    {login}@mirc.test".ljust(30) + role)
    patient = live_story_patient()
    if patient is not None:
        stdout.write(
            f"  Live story: p.lemoine sends {patient.display_name}'s chest CT to teleradiology."
        )


# --- The requests' words ---------------------------------------------------------------------

RADIOLOGY = {
    "nodule": {
        "question": "Nodule pulmonaire de 11 mm du lobe supérieur droit : suivi simple ou avis "
        "chirurgical ?",
        "clinical_context": "Ancien fumeur (30 paquets-années, sevré en 2015). Découverte "
        "fortuite lors d'un bilan de dyspnée.",
    },
    "pneumonia": {
        "question": "Fièvre et désaturation chez un patient âgé : pneumopathie, épanchement, "
        "autre cause ?",
        "clinical_context": "Hospitalisé en gériatrie après une chute. CRP à 145 mg/L. Pas de "
        "radiologue sur place ce soir.",
    },
    "embolism": {
        "question": "Suspicion d'embolie pulmonaire : l'angioscanner permet-il de conclure ?",
        "clinical_context": "Dyspnée brutale à J5 d'une prothèse de hanche. D-dimères à 2 800 "
        "ng/mL.",
    },
    "mass": {
        "question": "Masse pulmonaire de 3 cm : aspect évocateur de néoplasie ? Quel bilan "
        "proposer ?",
        "clinical_context": "Amaigrissement de 6 kg en trois mois, toux chronique. Patient de "
        "84 ans, autonome.",
    },
    "emphysema": {
        "question": "Emphysème au scanner : quelle extension, et une réduction de volume "
        "est-elle envisageable ?",
        "clinical_context": "BPCO stade 3, VEMS à 38 %. Avis demandé au Dr Vidal, qui avait "
        "vu le scanner précédent.",
    },
    "effusion": {
        "question": "Épanchement pleural droit : abondance, aspect cloisonné ? Faut-il "
        "ponctionner ?",
        "clinical_context": "Insuffisance cardiaque connue, dyspnée progressive depuis une "
        "semaine.",
    },
    "thin_slices": {
        "question": "Nodule du lobe moyen : solide ou en verre dépoli ? Quel suivi ?",
        "clinical_context": "Scanner fait aux urgences pour douleur thoracique, nodule de "
        "découverte fortuite.",
    },
    "fracture": {
        "question": "Fractures de côtes après chute : combien, et y a-t-il un pneumothorax ?",
        "clinical_context": "Chute de sa hauteur à domicile, sous anticoagulant (apixaban).",
    },
    "contrast": {
        "question": "Adénopathies médiastinales : taille, et aspect en faveur d'une sarcoïdose "
        "ou d'un lymphome ?",
        "clinical_context": "Érythème noueux et toux sèche depuis deux mois chez une patiente "
        "non fumeuse.",
    },
    "pneumothorax": {
        "question": "Pneumothorax gauche : décollement complet ? Drainage nécessaire ?",
        "clinical_context": "Douleur thoracique brutale, SpO2 à 93 % en air ambiant.",
    },
    "control": {
        "question": "Contrôle à 6 mois du nodule du lobe supérieur droit : est-il stable ?",
        "clinical_context": "Suivi proposé par le radiologue du CHRU lors de l'avis initial.",
    },
    "hemoptysis": {
        "question": "Hémoptysie de moyenne abondance : origine visible au scanner ?",
        "clinical_context": "Deux épisodes de 50 mL ce matin, hémodynamique stable. Ancien "
        "tuberculeux.",
    },
}

DERMATOLOGY = {
    "keratosis": {
        "question": "Lésion pigmentée du dos, apparue il y a un an : kératose séborrhéique ou "
        "lésion à exciser ?",
        "clinical_context": "Pas d'antécédent de mélanome. Lésion non prurigineuse, ne saigne pas.",
    },
    "melanoma": {
        "question": "Naevus de la jambe qui a changé de couleur et de forme en six mois : "
        "faut-il l'exciser rapidement ?",
        "clinical_context": "Phototype II, nombreux coups de soleil dans l'enfance. Père "
        "traité pour un mélanome.",
    },
    "pregnancy": {
        "question": "Naevus de l'abdomen qui a grossi pendant la grossesse : surveillance ou "
        "consultation ?",
        "clinical_context": "Grossesse au troisième trimestre, suivie au CHRU de Tours.",
    },
    "nevus": {
        "question": "Petite lésion pigmentée du cuir chevelu découverte par le coiffeur : "
        "bénigne ?",
        "clinical_context": "Aucun antécédent dermatologique.",
    },
}

CARDIOLOGY = {
    "rbbb": {
        "question": "Bloc de branche droit sur un ECG systématique : faut-il d'autres "
        "explorations ?",
        "clinical_context": "Patient asymptomatique, ECG fait pour une licence sportive.",
    },
    "af": {
        "question": "Rythme irrégulier à l'ECG : fibrillation atriale ? Faut-il anticoaguler "
        "en attendant la consultation ?",
        "clinical_context": "Palpitations depuis trois jours, HTA traitée. CHA2DS2-VASc à 3.",
    },
    "chest_pain": {
        "question": "Douleur thoracique depuis ce matin : l'ECG est-il rassurant ?",
        "clinical_context": "Douleur constrictive au repos, diabétique de type 2.",
    },
    "bradycardia": {
        "question": "Bradycardie à 58/min sous bêtabloquant : faut-il réduire la dose ?",
        "clinical_context": "Asthénie, pas de malaise. Bisoprolol 5 mg pour une HTA.",
    },
    "preop": {
        "question": "ECG préopératoire avant une prothèse de genou : l'intervention peut-elle "
        "se faire sans consultation de cardiologie ?",
        "clinical_context": "Patient de 71 ans, HTA équilibrée, pas de symptôme.",
    },
}

REPORTS = {
    "nodule": {
        "findings": "Nodule solide de 11 mm du segment apical du lobe supérieur droit, à "
        "contours lisses, sans calcification. Pas d'adénopathie.",
        "conclusion": "Nodule solide indéterminé de 11 mm (Fleischner : risque intermédiaire).",
        "recommendation": "Scanner de contrôle à 3 mois, puis à 6 mois si stable ; pas "
        "d'avis chirurgical d'emblée.",
        "needs_exam": True,
        "exam_detail": "TDM thoracique low-dose à 3 mois",
    },
    "pneumonia": {
        "findings": "Condensation alvéolaire du lobe inférieur droit avec bronchogramme "
        "aérique. Petit épanchement pleural réactionnel.",
        "conclusion": "Pneumopathie franche lobaire inférieure droite.",
        "recommendation": "Antibiothérapie ; radiographie de contrôle à 6 semaines. Avis "
        "pneumologique si évolution défavorable.",
        "needs_consultation": True,
    },
    "embolism": {
        "findings": "Opacification satisfaisante des artères pulmonaires jusqu'aux branches "
        "segmentaires. Aucun défect endoluminal.",
        "conclusion": "Pas d'embolie pulmonaire proximale ni segmentaire.",
        "recommendation": "Rechercher une autre cause à la dyspnée.",
    },
    "mass": {
        "findings": "Masse spiculée de 31 mm du lobe supérieur gauche, au contact de la "
        "plèvre. Adénopathie hilaire homolatérale de 14 mm.",
        "conclusion": "Aspect très évocateur d'une néoplasie bronchique.",
        "recommendation": "TEP-TDM et discussion en RCP thoracique avant tout prélèvement, "
        "compte tenu de l'âge.",
        "needs_consultation": True,
        "needs_exam": True,
        "exam_detail": "TEP-TDM au 18F-FDG",
    },
    "emphysema": {
        "findings": "Emphysème centrolobulaire prédominant aux lobes supérieurs, hétérogène. "
        "Scissures complètes.",
        "conclusion": "Emphysème hétérogène compatible avec une réduction de volume endoscopique.",
        "recommendation": "Adresser au centre de référence pour discuter des valves "
        "endobronchiques.",
    },
    "effusion": {
        "findings": "Épanchement pleural droit de moyenne abondance, libre, non cloisonné. "
        "Cardiomégalie.",
        "conclusion": "Épanchement pleural droit libre, d'allure transsudative.",
        "recommendation": "Optimiser le traitement diurétique ; ponction seulement si fièvre "
        "ou persistance.",
    },
    "pneumothorax": {
        "findings": "Pneumothorax gauche partiel, décollement apical de 25 mm, sans "
        "déviation médiastinale.",
        "conclusion": "Pneumothorax partiel gauche, non compressif.",
        "recommendation": "Exsufflation selon l'évolution clinique ; radiographie de contrôle "
        "à 24 h.",
        "needs_exam": True,
        "exam_detail": "Radiographie thoracique de face à 24 h",
    },
    "keratosis": {
        "findings": "Lésion brune bien limitée, d'aspect verruqueux, à surface mate.",
        "conclusion": "Aspect typique de kératose séborrhéique.",
        "recommendation": "Pas d'exérèse nécessaire ; reconsulter si modification.",
    },
    "melanoma": {
        "findings": "Lésion asymétrique de 9 mm, bords irréguliers, couleur hétérogène.",
        "conclusion": "Lésion suspecte de mélanome (critères ABCDE présents).",
        "recommendation": "Exérèse complète rapide pour analyse histologique.",
        "needs_consultation": True,
    },
    "rbbb": {
        "findings": "Rythme sinusal à 68/min. QRS à 130 ms, aspect rSR' en V1.",
        "conclusion": "Bloc de branche droit complet isolé.",
        "recommendation": "Pas d'exploration complémentaire chez un patient asymptomatique ; "
        "pas de contre-indication au sport.",
    },
    "af": {
        "findings": "Rythme irrégulier sans onde P visible, fréquence ventriculaire à 96/min.",
        "conclusion": "Fibrillation atriale à réponse ventriculaire modérée.",
        "recommendation": "Anticoagulation sans attendre (apixaban 5 mg deux fois par jour) ; "
        "consultation de cardiologie et échocardiographie.",
        "needs_consultation": True,
        "needs_exam": True,
        "exam_detail": "Échocardiographie transthoracique",
    },
}
