"""Imaging: the embedded archive's index, and the portal's index of studies per patient.

Two indexes on purpose. ``ArchivedInstance`` belongs to the embedded archive (it plays the
part a PACS plays in production). ``Study``/``Series``/``Instance`` belong to the portal:
which patient a study is about (the permission anchor), its summary for the dossier, and
the content hash of every instance that went through the portal's ingest.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.documents_models import GeneratedDocument
from portal.models import Establishment, Patient

UID_LENGTH = 64


class ArchivedInstance(models.Model):
    """One Part 10 file of the embedded archive, stored under its SHA-256."""

    sop_instance_uid = models.CharField(max_length=UID_LENGTH, unique=True)
    series_instance_uid = models.CharField(max_length=UID_LENGTH, db_index=True)
    study_instance_uid = models.CharField(max_length=UID_LENGTH, db_index=True)
    sop_class_uid = models.CharField(max_length=UID_LENGTH)
    transfer_syntax_uid = models.CharField(max_length=UID_LENGTH)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    number_of_frames = models.PositiveIntegerField(default=1)
    instance_number = models.IntegerField(null=True)
    series_number = models.IntegerField(null=True)
    # Matching keys of QIDO-RS searches.
    patient_id = models.CharField(max_length=64, blank=True, db_index=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_name = models.CharField(max_length=200, blank=True)
    patient_birth_date = models.CharField(max_length=8, blank=True)
    study_date = models.CharField(max_length=8, blank=True, db_index=True)
    accession_number = models.CharField(max_length=16, blank=True, db_index=True)
    modality = models.CharField(max_length=16, blank=True)
    # DICOM JSON of each level's attributes, without bulk data.
    study_attributes = models.JSONField(default=dict)
    series_attributes = models.JSONField(default=dict)
    instance_attributes = models.JSONField(default=dict)
    stored_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(
                fields=["study_instance_uid", "series_instance_uid"],
                name="archived_study_series_idx",
            )
        ]

    def __str__(self):
        return self.sop_instance_uid


class StudyIdentity(models.TextChoices):
    MATCHED = "matched", _("Matched to the patient")
    REVIEW = "review", _("Identity to review")
    UNKNOWN = "unknown", _("Unknown patient")


class StudyOrigin(models.TextChoices):
    """How a study reached the regional archive, set by the ingest path that created it (the
    programme's indicators count studies by origin, issue 17)."""

    ACCESS_POINT = "access_point", _("Access point (DICOM gateway)")
    UPLOAD = "upload", _("Upload")
    STOW = "stow", _("STOW-RS")
    MIGRATION = "migration", _("Migration of an archive")
    ARCHIVE = "archive", _("Found in the archive")
    # Studies indexed before the origin was recorded, that no upload names.
    UNKNOWN = "unknown", _("Unknown")


class Study(models.Model):
    """A study of the regional archive as the portal knows it."""

    study_instance_uid = models.CharField(max_length=UID_LENGTH, unique=True)
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, null=True, blank=True, related_name="studies"
    )
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, null=True, blank=True, related_name="studies"
    )
    identity = models.CharField(max_length=10, choices=StudyIdentity.choices)
    # As the images say (DICOM), whatever the portal's patient says.
    dicom_patient_id = models.CharField(max_length=64, blank=True)
    dicom_issuer = models.CharField(max_length=64, blank=True)
    dicom_patient_name = models.CharField(max_length=200, blank=True)
    dicom_birth_date = models.CharField(max_length=8, blank=True)
    dicom_sex = models.CharField(max_length=1, blank=True)
    study_date = models.DateField(null=True, blank=True)
    study_time = models.TimeField(null=True, blank=True)
    accession_number = models.CharField(max_length=16, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    description = models.CharField(max_length=200, blank=True)
    modalities = models.CharField(max_length=64, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    institution_name = models.CharField(max_length=200, blank=True)
    referring_physician = models.CharField(max_length=200, blank=True)
    series_count = models.PositiveIntegerField(default=0)
    instance_count = models.PositiveIntegerField(default=0)
    thumbnail = models.CharField(max_length=200, blank=True)
    origin = models.CharField(
        max_length=12, choices=StudyOrigin.choices, default=StudyOrigin.UNKNOWN
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("study")
        verbose_name_plural = _("studies")
        indexes = [
            models.Index(fields=["patient", "-study_date"], name="study_patient_date_idx"),
            models.Index(fields=["identity"], name="study_identity_idx"),
        ]

    def __str__(self):
        return f"{self.study_date or '?'} {self.modalities} {self.description}".strip()


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=UID_LENGTH, unique=True)
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=200, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    instance_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["series_number", "pk"]

    def __str__(self):
        return f"{self.modality} {self.series_number} {self.description}".strip()


class Instance(models.Model):
    """An instance that went through the portal's ingest, with its content hash."""

    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=UID_LENGTH, unique=True)
    sop_class_uid = models.CharField(max_length=UID_LENGTH)
    instance_number = models.IntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    transfer_syntax_uid = models.CharField(max_length=UID_LENGTH)
    number_of_frames = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["instance_number", "pk"]

    def __str__(self):
        return self.sop_instance_uid


class QuarantinedInstance(models.Model):
    """A file whose SOPInstanceUID is known with other content: kept aside, reported."""

    sop_instance_uid = models.CharField(max_length=UID_LENGTH, db_index=True)
    study_instance_uid = models.CharField(max_length=UID_LENGTH, blank=True)
    sha256 = models.CharField(max_length=64)
    existing_sha256 = models.CharField(max_length=64, blank=True)
    path = models.CharField(max_length=300)
    reason = models.CharField(max_length=300)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.sop_instance_uid


class StudyReport(models.Model):
    """The report of a study: structured report text, or an encapsulated PDF in the archive."""

    class Kind(models.TextChoices):
        SR = "sr", _("Structured report")
        PDF = "pdf", _("PDF report")

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="reports")
    kind = models.CharField(max_length=3, choices=Kind.choices)
    title = models.CharField(max_length=200, blank=True)
    text = models.TextField(blank=True)
    series_instance_uid = models.CharField(max_length=UID_LENGTH)
    sop_instance_uid = models.CharField(max_length=UID_LENGTH, unique=True)
    author = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.title or self.get_kind_display()


class IngestBatch(models.Model):
    """One upload: files spooled on disk, ingested by a Celery task, results per file."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting")
        RUNNING = "running", _("In progress")
        DONE = "done", _("Done")
        RETRYING = "retrying", _("Archive unavailable, retrying")
        FAILED = "failed", _("Failed")

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="ingest_batches")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"batch {self.pk} ({self.state})"

    @property
    def spool_dir(self) -> str:
        return f"spool/{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)


class IngestItem(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting", _("Waiting")
        ACCEPTED = "accepted", _("Stored")
        DUPLICATE = "duplicate", _("Already in the archive")
        QUARANTINED = "quarantined", _("Quarantined")
        REJECTED = "rejected", _("Rejected")

    batch = models.ForeignKey(IngestBatch, on_delete=models.CASCADE, related_name="items")
    name = models.CharField(max_length=300)
    spool_name = models.CharField(max_length=80, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.WAITING)
    reason = models.CharField(max_length=300, blank=True)
    sop_instance_uid = models.CharField(max_length=UID_LENGTH, blank=True)
    study = models.ForeignKey(Study, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self):
        return f"{self.name}: {self.status}"


class ArchiveSync(models.Model):
    """When the portal last asked the archive for a patient's studies."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="archive_sync")
    requested_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    def __str__(self):
        return f"sync {self.patient_id}"


class ViewerToken(models.Model):
    """A short-lived, revocable key to one study or one patient's studies, for an external
    viewer (OHIF, Weasis) launched on the portal's DICOMweb service. Only a hash is kept."""

    token_hash = models.CharField(max_length=64, unique=True)
    # Empty for the token of a share (imaging.shares): its recipient has no account, and the
    # token opens the share's studies only, while the share is in force.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="viewer_tokens",
    )
    share = models.ForeignKey(
        "Share", on_delete=models.CASCADE, null=True, blank=True, related_name="viewer_tokens"
    )
    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(study__isnull=False, patient__isnull=True)
                | models.Q(study__isnull=True, patient__isnull=False),
                name="viewer_token_one_scope",
            ),
            # A token is a user's, or a share's (then scoped to the share's patient): never
            # both, never neither.
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, share__isnull=True)
                | models.Q(user__isnull=True, share__isnull=False, patient__isnull=False),
                name="viewer_token_user_or_share",
            ),
        ]

    def __str__(self):
        return f"token {self.pk} of {self.user_id or f'share {self.share_id}'}"

    @property
    def is_valid(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class ReviewRoom(models.Model):
    """A live shared review of a patient's images (see docs/review-protocol.md).

    A room is opened from a study by its coordinator, who invites colleagues, or by a higher
    app for what it owns: an RCP case and a tele-expertise request each point to their room
    (``Case.review_room``, ``Request.review_room``), so imaging knows nothing of them and
    asks their AppConfigs who may join (imaging.review). Whoever joins must also be entitled
    to the patient: an invitation never opens a door the patient's permissions keep shut.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(_("title"), max_length=200)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="review_rooms")
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="review_rooms")
    coordinator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="review_rooms", blank=True
    )
    presenter = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.title


class ReviewPresence(models.Model):
    """One open WebSocket of a participant: presence survives across daphne processes."""

    room = models.ForeignKey(ReviewRoom, on_delete=models.CASCADE, related_name="presences")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel_name = models.CharField(max_length=200, unique=True)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["room", "user"])]

    def __str__(self):
        return f"{self.user} in {self.room}"


# --- The establishments' DICOM declarations (the regional DICOM gateway) ---------------------


class DicomDeclaration(models.Model):
    """How one establishment connects to the regional DICOM gateway (imaging/gateway.py).

    Its calling AE titles are the only ones the gateway accepts associations from; the
    destination AE of its PACS is where retrieves and prefetched priors will be sent.
    """

    establishment = models.OneToOneField(
        Establishment,
        on_delete=models.CASCADE,
        related_name="dicom_declaration",
        verbose_name=_("establishment"),
    )
    pacs_ae_title = models.CharField(_("PACS AE title"), max_length=16, blank=True)
    pacs_host = models.CharField(_("PACS host"), max_length=255, blank=True)
    pacs_port = models.PositiveIntegerField(_("PACS port"), null=True, blank=True)
    # Images leave the region's network for the establishment's: over TLS (PS3.15 B.1) when
    # its PACS takes it, the PACS's certificate checked against the regional CA bundle and
    # the gateway's own presented (DICOM_GATEWAY_TLS_*).
    pacs_tls = models.BooleanField(
        _("TLS"),
        default=False,
        help_text=_(
            "The PACS takes DICOM over TLS: its certificate is checked against the regional "
            "certification authorities and the gateway presents its own."
        ),
    )
    # The prefetch of priors (imaging.prefetch): on admission, the patient's studies made by
    # the other establishments are sent to this PACS. Empty values take the regional settings.
    prefetch_enabled = models.BooleanField(
        _("send priors to the PACS"),
        default=True,
        help_text=_("On admission, send the patient's priors from other establishments."),
    )
    prefetch_years = models.PositiveSmallIntegerField(
        _("priors of the last (years)"),
        null=True,
        blank=True,
        help_text=_("Empty: the regional setting."),
    )
    prefetch_max_studies = models.PositiveSmallIntegerField(
        _("at most (studies)"),
        null=True,
        blank=True,
        help_text=_("Empty: the regional setting."),
    )
    prefetch_modalities_first = models.CharField(
        _("modalities first"),
        max_length=64,
        blank=True,
        help_text=_("Modalities sent first, comma-separated (CT,MR). Empty: the most recent."),
    )

    class Meta:
        verbose_name = _("DICOM declaration")
        verbose_name_plural = _("DICOM declarations")

    def __str__(self):
        return str(self.establishment)

    @property
    def has_pacs(self) -> bool:
        return bool(self.pacs_ae_title and self.pacs_host and self.pacs_port)

    @property
    def modalities_first(self) -> list[str]:
        return [
            code.strip().upper()
            for code in self.prefetch_modalities_first.split(",")
            if code.strip()
        ]


class CallingAETitle(models.Model):
    """One AE title an establishment sends from; unique in the region, so that an incoming
    association names its establishment without doubt."""

    declaration = models.ForeignKey(
        DicomDeclaration, on_delete=models.CASCADE, related_name="calling_ae_titles"
    )
    ae_title = models.CharField(_("calling AE title"), max_length=16, unique=True)
    # Empty: any address; otherwise associations with this title come only from it.
    allowed_address = models.GenericIPAddressField(
        _("allowed source address"), null=True, blank=True
    )

    class Meta:
        verbose_name = _("calling AE title")
        verbose_name_plural = _("calling AE titles")

    def __str__(self):
        return self.ae_title


# --- The prefetch of priors to an establishment's PACS (imaging.prefetch) --------------------


class PrefetchTrigger(models.TextChoices):
    A01 = "A01", _("Admission (A01)")
    A04 = "A04", _("Registration (A04)")
    A05 = "A05", _("Pre-admission (A05)")
    ON_DEMAND = "on_demand", _("On demand")


class PrefetchRequest(models.Model):
    """Priors of a patient to send to one establishment's PACS, and how far it went.

    Its state changes by a guarded UPDATE on the previous state (imaging.prefetch), so that two
    workers never both send it."""

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent to your PACS")
        FAILED = "failed", _("Failed")

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="prefetch_requests")
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, related_name="prefetch_requests"
    )
    trigger = models.CharField(max_length=10, choices=PrefetchTrigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The PACS as declared when the request was made (the audit names it).
    destination_ae_title = models.CharField(max_length=16)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    # A failed request that the task will try again (False: it gave up).
    will_retry = models.BooleanField(default=False)
    studies = models.ManyToManyField(Study, through="PrefetchItem", related_name="+")
    instances_total = models.PositiveIntegerField(default=0)
    instances_sent = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["patient", "establishment", "-created_at"], name="prefetch_idx")
        ]

    def __str__(self):
        return f"prefetch {self.pk} ({self.state})"


class PrefetchItem(models.Model):
    """One study of a prefetch request; ``sent`` marks it delivered to that PACS."""

    request = models.ForeignKey(PrefetchRequest, on_delete=models.CASCADE, related_name="items")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prefetch_items")
    position = models.PositiveSmallIntegerField(default=0)
    sent = models.BooleanField(default=False)
    instances_sent = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["request", "study"], name="prefetch_item_unique")
        ]

    def __str__(self):
        return f"{self.request_id}: {self.study_id}"


# --- DICOMDIR packages (imaging.packages) ------------------------------------------------------


class StudyPackage(models.Model):
    """A zip of some of a patient's studies for a doctor who wants the images locally: a
    DICOMDIR (PS3.10 §8, PS3.3 Annex F) over the archive's files, byte for byte, and the
    reports. Made by a Celery task (imaging.build_package), kept PACKAGES_KEEP_DAYS days."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Waiting")
        RUNNING = "running", _("In progress")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")
        EXPIRED = "expired", _("Expired")

    class OmittedReason(models.TextChoices):
        """Why a file of the archive was left out of the zip (imaging.packages)."""

        UNREADABLE = "unreadable", _("not a readable DICOM file")
        UNDESCRIBABLE = "undescribable", _("its header lacks what a DICOMDIR record needs")

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="study_packages")
    studies = models.ManyToManyField(Study, related_name="+")
    # Who asked (a care-team doctor); null for a package made for something else that keeps
    # its own requester (a share), or once that account is gone.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    label = models.CharField(max_length=200, blank=True)
    # Generated documents to add under REPORTS/: [{"label", "model", "pk"}], read at build
    # time through portal.documents.read (checked against their SHA-256).
    documents = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    # Relative to settings.PACKAGES_DIR; the name says nothing of the patient.
    file_name = models.CharField(max_length=200, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # Files of the archive a ready package leaves out, as they could not be described in a
    # DICOMDIR: [{"study", "series", "instance", "reason", "detail"}] (imaging.packages).
    omitted = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The share whose recipient asked for it (imaging.shares), requested_by then empty.
    # PROTECT: a share is never deleted, only revoked; a package row is the record of an
    # export (its audit events point at it) and the purge finds its file through it.
    share = models.ForeignKey(
        "imaging.Share",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="packages",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["patient", "requested_by", "-created_at"], name="package_idx"),
            models.Index(fields=["status", "expires_at"], name="package_expiry_idx"),
        ]

    def __str__(self):
        return f"package {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.READY, self.Status.FAILED, self.Status.EXPIRED)

    @property
    def omitted_instances(self) -> list[str]:
        """The UIDs of the files left out (the export's audit event names them)."""
        return [entry.get("instance", "") for entry in self.omitted]

    @property
    def omitted_files(self) -> list[tuple[str, str]]:
        """(instance UID, why, in the reader's language) of each file left out; a reason
        this version does not know is shown as written."""
        labels = dict(self.OmittedReason.choices)
        return [
            (entry.get("instance", ""), labels.get(entry.get("reason"), entry.get("reason", "")))
            for entry in self.omitted
        ]


# --- The regional programme's indicators (imaging.activity, issue 17) -------------------------


class ActivityMonth(models.Model):
    """One figure of one month: the summary table the indicators are read from.

    A row is (establishment, month, modality, figure) -> value. ``establishment`` is the
    establishment the figure belongs to; null for what no establishment owns (a study whose
    images named none). ``modality`` is the study's modalities as the dossier lists them
    ("CT", "CT/PT"), empty for a figure that has none (a prefetch request, a tele-expertise
    request). ``figure`` is one of imaging.activity.FIGURES, or a key a higher app brings
    through its AppConfig's ``imaging_activity``. Every figure is additive: a quarter, a
    year, the region or all modalities are sums of rows (imaging.selectors.activity_table),
    and an average is kept as a sum and a count.

    Written only by imaging.activity.activity_compute, month by month: an open month's rows
    are replaced whole, a closed month's (ActivityMonthState.closed) never again.
    """

    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    month = models.DateField()  # its first day
    modality = models.CharField(max_length=64, blank=True)
    figure = models.CharField(max_length=64)
    value = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["establishment", "month", "modality", "figure"],
                condition=models.Q(establishment__isnull=False),
                name="activity_month_unique",
            ),
            # NULL is distinct from NULL in a unique index: the rows of no establishment
            # get their own (SQLite has no NULLS NOT DISTINCT).
            models.UniqueConstraint(
                fields=["month", "modality", "figure"],
                condition=models.Q(establishment__isnull=True),
                name="activity_month_unique_none",
            ),
            models.CheckConstraint(
                condition=models.Q(month__day=1), name="activity_month_first_day"
            ),
        ]
        indexes = [models.Index(fields=["month", "figure"], name="activity_month_idx")]
        # view_activitymonth reads every establishment's figures (the regional programme);
        # this one only those of the holder's establishments (a director, imaging.permissions).
        permissions = [
            ("view_establishment_activity", "Can read the imaging activity of its establishments")
        ]

    def __str__(self):
        return f"{self.month:%Y-%m} {self.establishment_id or '-'} {self.figure}={self.value}"


class ActivityMonthState(models.Model):
    """When a month's figures were computed, and whether they are closed for good.

    A month closes at its first computation made ACTIVITY_MONTH_CLOSES_AFTER_DAYS days or more
    after its end: from then on its figures never change, whatever data arrives late."""

    month = models.DateField(unique=True)
    computed_at = models.DateTimeField()
    closed = models.BooleanField(default=False)

    def __str__(self):
        return f"{self.month:%Y-%m} ({'closed' if self.closed else 'open'})"


# --- Shares with a professional who has no account (imaging.shares) ---------------------------


class Share(models.Model):
    """Studies and documents of one patient shared with a named professional without an
    account, by a link and a one-time code sent to their e-mail (imaging.shares).

    Only the hash of the link's token is kept. The share ends at ``expires_at`` or when
    revoked; every opening is counted here and audited against the patient."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="shares")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recipient_name = models.CharField(_("recipient's name"), max_length=200)
    recipient_email = models.EmailField(_("recipient's e-mail"))
    recipient_rpps = models.CharField(_("recipient's RPPS"), max_length=11, blank=True)
    note = models.TextField(_("note to the recipient"), blank=True)
    studies = models.ManyToManyField(Study, related_name="shares", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    revoke_reason = models.CharField(max_length=300, blank=True)
    view_count = models.PositiveIntegerField(default=0)
    last_viewed_at = models.DateTimeField(null=True, blank=True)
    link_token_hash = models.CharField(max_length=64, unique=True)
    # The author lets the recipient take the studies away as a DICOMDIR zip (imaging.packages).
    allow_download = models.BooleanField(_("images downloadable (DICOMDIR)"), default=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("share")
        verbose_name_plural = _("shares")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at")),
                name="share_expires_after_creation",
            )
        ]

    def __str__(self):
        return f"share {self.pk} with {self.recipient_name}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_suspended(self) -> bool:
        """The patient opposes sharing (CSP L1110-4) since the share was made: it opens
        nothing while the opposition lasts (the recipient is outside the care team)."""
        return self.patient.sharing_opposed

    @property
    def in_force(self) -> bool:
        return not self.is_revoked and not self.is_expired and not self.is_suspended


class ShareDocument(models.Model):
    """A document of a share: a study report of imaging, or a generated document of a
    higher app (a signed fiche RCP, a tele-expertise report), named by content type and id
    because imaging cannot import those apps; they offer them through their AppConfig's
    ``shareable_documents``."""

    share = models.ForeignKey(Share, on_delete=models.CASCADE, related_name="documents")
    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.PROTECT)
    object_id = models.PositiveBigIntegerField()
    label = models.CharField(max_length=300)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["share", "content_type", "object_id"], name="share_document_unique"
            )
        ]

    def __str__(self):
        return self.label


class ShareCode(models.Model):
    """A one-time code sent to the recipient's e-mail: used once, valid ten minutes, burnt
    after too many wrong tries. Only its hash is kept."""

    share = models.ForeignKey(Share, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["share", "-created_at"], name="share_code_idx")]

    def __str__(self):
        return f"code {self.pk} of share {self.share_id}"


# --- Usage metering: the establishments' monthly statements (imaging.metering, issue 17) -----


class MeteringService(models.TextChoices):
    """What a statement line counts (its price: METERING_PRICES, per unit)."""

    ARCHIVE = "archive", _("Exams archived")
    SHARING = "sharing", _("Exams consulted by other establishments")
    STORAGE = "storage", _("Storage at the end of the month (GB)")


class Statement(models.Model):
    """The usage statement of one establishment for one closed month (its first day).

    Issued once by imaging.metering.statements_issue and never changed: what a later recount
    finds different becomes a correction line of a later statement. The totals are those of
    its lines, copied for the lists; ``total`` is in euros, corrections included."""

    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, related_name="usage_statements"
    )
    month = models.DateField()
    issued_at = models.DateTimeField()
    exams_archived = models.PositiveIntegerField()
    exams_consulted = models.PositiveIntegerField()
    storage_gb = models.DecimalField(max_digits=14, decimal_places=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        verbose_name = _("usage statement")
        verbose_name_plural = _("usage statements")
        ordering = ["-month", "establishment__name"]
        constraints = [
            # Never two statements for one establishment-month, whatever runs at once.
            models.UniqueConstraint(fields=["establishment", "month"], name="statement_unique"),
            models.CheckConstraint(condition=models.Q(month__day=1), name="statement_first_day"),
        ]
        # view_statement (Django's own) reads every establishment's; this one, those of the
        # holder's establishments (an establishment-scoped role: the billing office).
        permissions = [
            ("view_affiliated_statements", "Can view the statements of its establishments")
        ]

    def __str__(self):
        return f"{self.establishment_id} {self.month:%Y-%m}"


class StatementLine(models.Model):
    """One line of a statement: a service, a modality, a quantity at the price of the day."""

    class Kind(models.TextChoices):
        NORMAL = "normal", _("Month")
        CORRECTION = "correction", _("Correction")

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="lines")
    service = models.CharField(max_length=16, choices=MeteringService.choices)
    modality = models.CharField(max_length=64, blank=True)
    quantity = models.DecimalField(max_digits=14, decimal_places=3)
    unit_price = models.DecimalField(max_digits=10, decimal_places=4)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.NORMAL)
    # A correction's month: the earlier statement whose figure it puts right.
    corrects_month = models.DateField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-kind", "corrects_month", "service", "modality", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="normal", corrects_month__isnull=True)
                | models.Q(kind="correction", corrects_month__isnull=False),
                name="statement_line_correction_month",
            ),
        ]

    def __str__(self):
        return f"{self.service} {self.modality} {self.quantity} × {self.unit_price}"

    @property
    def price_places(self) -> int:
        """The decimals the unit price is shown with: two, more if the price has them."""
        return max(2, -self.unit_price.normalize().as_tuple().exponent)


class StatementDocument(GeneratedDocument):
    """The PDF of a statement (portal.documents; imaging.metering's kind)."""

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="documents")
    file = models.FileField(upload_to="imaging/statements/%Y/%m/", blank=True)

    class Meta(GeneratedDocument.Meta):
        constraints = [
            # One being made or made at a time; a failed one may be tried again.
            models.UniqueConstraint(
                fields=["statement"],
                condition=~models.Q(status="failed"),
                name="statement_document_one_live",
            ),
        ]

    def __str__(self):
        return f"statement {self.statement_id} ({self.status})"
