"""RCP: committees, sessions, cases (the fiche RCP) and their decisions.

Codes of the national data set (CI-SIS FRCP: meeting nature, organ, phase, WHO status,
treatment types, case and quorum status, ICD-10 topography, ICD-O-3 morphology) are stored as
codes, validated against the value sets of ``rcp/frcp.py`` by the forms and services, so that
a case can be exported as the national CDA document and counted in the indicators.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from imaging.models import Study
from portal.documents_models import GeneratedDocument, UploadedFile
from portal.models import Establishment, Patient, Professional, Specialty

# The four core specialties of a CPDPN (CSP R2131-12): all needed for a case to count.
CPDPN_CORE_SPECIALTIES = [
    Specialty.GYNECOLOGY_OBSTETRICS,
    Specialty.FETAL_MEDICINE,
    Specialty.PEDIATRICS_NEONATOLOGY,
    Specialty.GENETICS,
]


class Committee(models.Model):
    class Kind(models.TextChoices):
        ORGAN = "organ", _("Cancer organ board")
        CROSS_CUTTING = "cross_cutting", _("Cross-cutting cancer board")
        CPDPN = "cpdpn", _("Perinatal board (CPDPN)")

    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    establishment = models.ForeignKey(
        Establishment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="committees",
        verbose_name=_("establishment"),
    )
    territory = models.CharField(_("territory"), max_length=200, blank=True)
    # FRCP: body system (JDV_RCP_Appareil) for organ boards, care theme
    # (JDV_TraitementSoins_FRCP) for cross-cutting ones.
    organ_system = models.CharField(_("body system"), max_length=20, blank=True)
    care_theme = models.CharField(_("care theme"), max_length=20, blank=True)
    required_specialties = models.JSONField(
        _("specialties the quorum requires"), default=list, blank=True
    )
    place = models.CharField(_("usual place"), max_length=200, blank=True)
    video_url = models.URLField(_("video link"), blank=True)
    members = models.ManyToManyField(
        Professional, through="CommitteeMember", related_name="committees"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("multidisciplinary committee")
        ordering = ["name"]
        permissions = [
            ("view_indicators", _("Can see the RCP indicators of every committee")),
        ]

    def __str__(self):
        return self.name

    @property
    def is_cpdpn(self) -> bool:
        return self.kind == self.Kind.CPDPN

    def get_required_specialties_display(self) -> list[str]:
        """The quorum's specialties by their labels, as ``get_FOO_display`` does for a choice."""
        labels = dict(Specialty.choices)
        return [str(labels.get(code, code)) for code in self.required_specialties]


class CommitteeMember(models.Model):
    class Role(models.TextChoices):
        CHAIR = "chair", _("Chair")
        COORDINATOR = "coordinator", _("Coordinator")
        MEMBER = "member", _("Member")

    committee = models.ForeignKey(Committee, on_delete=models.CASCADE, related_name="memberships")
    professional = models.ForeignKey(
        Professional, on_delete=models.CASCADE, related_name="committee_memberships"
    )
    role = models.CharField(_("role"), max_length=20, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["committee", "professional"], name="one_membership"),
            # One chair at most (rcp.committees hands the chair over).
            models.UniqueConstraint(
                fields=["committee"], condition=models.Q(role="chair"), name="one_chair"
            ),
        ]

    def __str__(self):
        return f"{self.professional} — {self.committee} ({self.get_role_display()})"


class Session(models.Model):
    class Status(models.TextChoices):
        PLANNED = "planned", _("Planned")
        IN_PROGRESS = "in_progress", _("In progress")
        # Closed with at least one case discussed or registered: the only sessions the
        # indicators count as held.
        HELD = "held", _("Held")
        # Closed with no case discussed: the meeting did not take place.
        NOT_HELD = "not_held", _("Not held")
        CANCELLED = "cancelled", _("Cancelled")

    OVER = (Status.HELD, Status.NOT_HELD, Status.CANCELLED)

    committee = models.ForeignKey(Committee, on_delete=models.PROTECT, related_name="sessions")
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"))
    submission_deadline = models.DateTimeField(_("case submission deadline"))
    place = models.CharField(_("place"), max_length=200, blank=True)
    video_url = models.URLField(_("video link"), blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.PLANNED
    )
    # Sessions scheduled together (weekly, every other week, monthly) share a series.
    series = models.UUIDField(null=True, blank=True, db_index=True)
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Null on a closed session: closed automatically the next day (Celery beat).
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The agenda e-mail: when it was last sent, by whom, and how many times (a second sending
    # is an update, said so in the e-mail).
    agenda_sent_at = models.DateTimeField(null=True, blank=True)
    agenda_sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    agenda_sendings = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("session")
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["committee", "starts_at"])]

    def __str__(self):
        return f"{self.committee} — {timezone.localtime(self.starts_at):%d/%m/%Y %H:%M}"


class Case(models.Model):
    """A patient's file presented to a committee: the fiche RCP (or its perinatal variant)."""

    class State(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SUBMITTED = "submitted", _("Submitted")
        ON_AGENDA = "on_agenda", _("On the agenda")
        DISCUSSED = "discussed", _("Discussed")
        REGISTERED = "registered", _("Registered")
        POSTPONED = "postponed", _("Postponed")
        VALIDATED = "validated", _("Decision validated")

    id = models.BigAutoField(primary_key=True)
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="rcp_cases")
    committee = models.ForeignKey(Committee, on_delete=models.PROTECT, related_name="cases")
    session = models.ForeignKey(
        Session, on_delete=models.PROTECT, null=True, blank=True, related_name="cases"
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="submitted_rcp_cases"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT)
    agenda_position = models.PositiveIntegerField(null=True, blank=True)
    # Optimistic concurrency: every save increments it; a form carries the one it was built on.
    revision = models.PositiveIntegerField(default=1)

    # --- Fiche RCP (cancer) ---
    nature = models.CharField(_("meeting nature"), max_length=20, blank=True)
    organ_system = models.CharField(_("body system"), max_length=20, blank=True)
    organ = models.CharField(_("organ"), max_length=20, blank=True)
    phase = models.CharField(_("phase"), max_length=20, blank=True)
    topography = models.CharField(_("diagnosis (ICD-10 topography)"), max_length=10, blank=True)
    morphology = models.CharField(_("histology (ICD-O-3 morphology)"), max_length=10, blank=True)
    diagnosis_date = models.DateField(_("date of diagnosis"), null=True, blank=True)
    tnm_prefix = models.CharField(_("TNM prefix"), max_length=4, blank=True)
    tnm_t = models.CharField("T", max_length=16, blank=True)
    tnm_n = models.CharField("N", max_length=16, blank=True)
    tnm_m = models.CharField("M", max_length=16, blank=True)
    performance_status = models.CharField(
        _("WHO/ECOG performance status"), max_length=20, blank=True
    )
    history = models.TextField(_("relevant history"), blank=True)
    comorbidities = models.TextField(_("comorbidities"), blank=True)
    results = models.TextField(_("results and events"), blank=True)
    question = models.TextField(_("question asked"), blank=True)
    # FRCP case status: a standard case that fits the guideline is only registered.
    presentation = models.CharField(_("presentation"), max_length=20, blank=True)

    # --- Perinatal (CPDPN) ---
    gestational_weeks = models.PositiveSmallIntegerField(
        _("gestational age (weeks)"), null=True, blank=True
    )
    gestational_days = models.PositiveSmallIntegerField(
        _("gestational age (days)"), null=True, blank=True
    )
    expected_term = models.DateField(_("expected term"), null=True, blank=True)
    pregnancy_history = models.TextField(_("pregnancy history"), blank=True)
    fetal_findings = models.TextField(_("fetal findings"), blank=True)
    investigations = models.TextField(_("investigations"), blank=True)
    couple_wishes = models.TextField(_("the couple's wishes"), blank=True)
    termination_attestation_requested = models.BooleanField(
        _("attestation for medical termination requested"), default=False
    )

    studies = models.ManyToManyField(Study, blank=True, related_name="rcp_cases")
    # The meeting's live review of the case's images (rcp.review): the case owns its room, and
    # imaging, below this app, asks rcp.apps who may join it. A room is only where the images
    # are shown: were it gone, the case would stay and open another.
    review_room = models.OneToOneField(
        "imaging.ReviewRoom", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    discussed_at = models.DateTimeField(null=True, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    postponements = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = _("RCP case")
        ordering = ["session", "agenda_position", "created_at"]
        indexes = [
            models.Index(fields=["committee", "state"]),
            models.Index(fields=["session", "agenda_position"]),
        ]

    def __str__(self):
        # No patient name: str() ends up in logs and task arguments.
        return f"RCP case {self.pk} ({self.committee})"


class CaseDocument(UploadedFile):
    class Kind(models.TextChoices):
        PATHOLOGY = "pathology", _("Pathology report")
        IMAGING = "imaging", _("Imaging report")
        LETTER = "letter", _("Letter")
        OTHER = "other", _("Other")

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="documents")
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to="rcp/documents/%Y/%m/")


class Attendance(models.Model):
    """Who is in the meeting, how, and with which specialty (the quorum counts these)."""

    class Mode(models.TextChoices):
        IN_PERSON = "in_person", _("In person")
        REMOTE = "remote", _("Remote")

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="attendances")
    professional = models.ForeignKey(Professional, on_delete=models.PROTECT, related_name="+")
    specialty = models.CharField(max_length=40, choices=Specialty.choices, blank=True)
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.IN_PERSON)
    arrived_at = models.DateTimeField(default=timezone.now)
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "professional"], name="one_attendance")
        ]

    def __str__(self):
        return f"{self.professional} ({self.get_mode_display()})"


class WrittenOpinion(models.Model):
    """An absent specialist's opinion on a case, recorded before the meeting: it covers that
    specialty in the quorum for that case."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="written_opinions")
    professional = models.ForeignKey(Professional, on_delete=models.PROTECT, related_name="+")
    specialty = models.CharField(max_length=40, choices=Specialty.choices)
    text = models.TextField(_("opinion"))
    recorded_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.professional} ({self.get_specialty_display()})"


class Decision(models.Model):
    """The committee's proposal for a case. Validation locks a version; a later change makes
    a new version with its reason, the validated ones stay as they were."""

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="decisions")
    version = models.PositiveIntegerField(default=1)
    revision = models.PositiveIntegerField(default=1)  # optimistic concurrency of the draft
    proposal = models.TextField(_("proposal"), blank=True)
    treatment_types = models.JSONField(_("treatment types"), default=list, blank=True)
    conforms_to_guideline = models.BooleanField(_("conforms to the guideline"), null=True)
    non_conformity_reason = models.TextField(_("why not the guideline"), blank=True)
    trial_proposed = models.BooleanField(_("clinical trial proposed"), default=False)
    trial_name = models.CharField(_("trial"), max_length=200, blank=True)
    trial_nct = models.CharField(_("NCT number"), max_length=20, blank=True)
    quorum_status = models.CharField(_("quorum status"), max_length=20, blank=True)
    attendees = models.JSONField(default=list, blank=True)  # snapshot at validation
    # Validated although the quorum was not met: an explicit act, with its reason and a
    # second validator, carried into the fiche, the PDF and the indicators.
    validated_without_quorum = models.BooleanField(default=False)
    without_quorum_reason = models.TextField(_("why validated without quorum"), blank=True)
    second_validator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # CPDPN
    team_opinion = models.TextField(_("the team's opinion"), blank=True)
    termination_attested = models.BooleanField(_("medical termination attested"), null=True)
    attesting_physicians = models.JSONField(default=list, blank=True)
    change_reason = models.TextField(_("reason for the new version"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    validated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    validated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["case", "version"]
        constraints = [
            models.UniqueConstraint(fields=["case", "version"], name="one_decision_version")
        ]

    def __str__(self):
        return f"decision v{self.version} of RCP case {self.case_id}"

    @property
    def is_locked(self) -> bool:
        return self.validated_at is not None


class KeyImage(models.Model):
    """An image marked in the viewer for a case: its reference, view state and a rendering
    (for the minutes)."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="key_images")
    study_uid = models.CharField(max_length=64)
    series_uid = models.CharField(max_length=64)
    sop_uid = models.CharField(max_length=64)
    frame = models.PositiveIntegerField(default=1)
    view_state = models.JSONField(default=dict, blank=True)
    rendering = models.FileField(upload_to="rcp/key-images/%Y/%m/", blank=True)
    caption = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.caption or self.sop_uid


# --- Calendar feeds (rcp/calendar.py) ------------------------------------------------------------


class CalendarFeedToken(models.Model):
    """The secret in the address of a user's calendar feed: calendar apps cannot sign in.

    Only its SHA-256 is kept; the address is shown once, when issued. Issuing a new one
    revokes the previous one, so a user has at most one working feed address.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rcp_calendar_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(revoked_at__isnull=True),
                name="one_live_calendar_token",
            )
        ]

    def __str__(self):
        return f"calendar token {self.pk} of {self.user_id}"


# --- Generated PDF documents (rcp/pdf.py) ------------------------------------------------------


class RcpDocument(GeneratedDocument):
    """A PDF made from the RCP record: the fiche of a case (one per validated decision version)
    or the minutes of a session. A Celery task renders it; the file is kept with its SHA-256,
    checked again at every download (portal.documents)."""

    class Kind(models.TextChoices):
        FICHE = "fiche", _("RCP form")
        MINUTES = "minutes", _("Session minutes")

    kind = models.CharField(max_length=10, choices=Kind.choices)
    case = models.ForeignKey(
        Case, on_delete=models.PROTECT, null=True, blank=True, related_name="pdf_documents"
    )
    decision = models.ForeignKey(
        Decision, on_delete=models.PROTECT, null=True, blank=True, related_name="pdf_documents"
    )
    session = models.ForeignKey(
        Session, on_delete=models.PROTECT, null=True, blank=True, related_name="pdf_documents"
    )
    file = models.FileField(upload_to="rcp/pdf/%Y/%m/", blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta(GeneratedDocument.Meta):
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(
                        kind="fiche",
                        case__isnull=False,
                        decision__isnull=False,
                        session__isnull=True,
                    )
                    | models.Q(
                        kind="minutes",
                        session__isnull=False,
                        case__isnull=True,
                        decision__isnull=True,
                    )
                ),
                name="rcp_document_subject",
            ),
            # One fiche per validated decision version; a failed one may be made again.
            models.UniqueConstraint(
                fields=["decision"],
                condition=models.Q(kind="fiche") & ~models.Q(status="failed"),
                name="one_fiche_per_decision_version",
            ),
            # Minutes are made again as decisions change, but one at a time.
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(kind="minutes", status__in=["pending", "running", "retrying"]),
                name="one_minutes_in_flight",
            ),
        ]
        indexes = [
            models.Index(fields=["case", "-created_at"]),
            models.Index(fields=["session", "-created_at"]),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.pk} ({self.status})"
