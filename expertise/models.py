"""Tele-expertise: a doctor asks a remote expert for an opinion on a patient (HAS 2019 steps,
CSP R6316-2 to R6316-4), from the question to the signed report and the billing records."""

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.documents_models import GeneratedDocument, UploadedFile
from portal.models import Establishment, Patient, Professional, Specialty

# --- Pools ---------------------------------------------------------------------------------------


class Urgency(models.TextChoices):
    URGENT = "urgent", _("Urgent")
    PRIORITY = "priority", _("Priority")
    ROUTINE = "routine", _("Routine")


# The answer each level expects by default: a pool's coordinators set their own (Pool's
# delays); a request keeps the one in force when it was sent.
EXPECTED_DELAY = {
    Urgency.URGENT: dt.timedelta(hours=24),
    Urgency.PRIORITY: dt.timedelta(days=3),
    Urgency.ROUTINE: dt.timedelta(days=7),
}
# Urgent first in the queues.
URGENCY_RANK = {Urgency.URGENT: 0, Urgency.PRIORITY: 1, Urgency.ROUTINE: 2}


class Pool(models.Model):
    """The experts of one specialty at one establishment who answer requests together."""

    name = models.CharField(_("name"), max_length=200)
    specialty = models.CharField(_("specialty"), max_length=40, choices=Specialty.choices)
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, related_name="expertise_pools"
    )
    is_active = models.BooleanField(_("accepting requests"), default=True)
    # The deadlines the pool commits to, per urgency (set by its coordinators).
    urgent_delay = models.DurationField(
        _("answer expected for an urgent request"), default=EXPECTED_DELAY[Urgency.URGENT]
    )
    priority_delay = models.DurationField(
        _("answer expected for a priority request"), default=EXPECTED_DELAY[Urgency.PRIORITY]
    )
    routine_delay = models.DurationField(
        _("answer expected for a routine request"), default=EXPECTED_DELAY[Urgency.ROUTINE]
    )
    # Optimistic concurrency of the settings: a form carries the one it was built on.
    revision = models.PositiveIntegerField(default=1)

    class Meta:
        verbose_name = _("expertise pool")
        verbose_name_plural = _("expertise pools")
        ordering = ["specialty", "name"]
        permissions = [
            ("view_indicators", _("Can see the tele-expertise indicators of every pool"))
        ]
        constraints = [
            models.UniqueConstraint(fields=["specialty", "establishment"], name="pool_unique")
        ]

    def __str__(self):
        return self.name

    def delay_for(self, urgency: str) -> dt.timedelta:
        """The answer this pool commits to for a request of ``urgency``."""
        return {
            Urgency.URGENT: self.urgent_delay,
            Urgency.PRIORITY: self.priority_delay,
            Urgency.ROUTINE: self.routine_delay,
        }[urgency]


class PoolMember(models.Model):
    class Role(models.TextChoices):
        EXPERT = "expert", _("Expert")
        COORDINATOR = "coordinator", _("Coordinator")

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="memberships")
    professional = models.ForeignKey(
        Professional, on_delete=models.CASCADE, related_name="expertise_memberships"
    )
    role = models.CharField(_("role"), max_length=12, choices=Role.choices)

    class Meta:
        verbose_name = _("pool member")
        verbose_name_plural = _("pool members")
        constraints = [
            models.UniqueConstraint(fields=["pool", "professional"], name="pool_member_unique")
        ]

    def __str__(self):
        return f"{self.professional} ({self.get_role_display()})"


# --- Requests ------------------------------------------------------------------------------------


class ConsentMethod(models.TextChoices):
    ORAL = "oral", _("Informed orally, consent noted in the record")
    WRITTEN = "written", _("Written consent")
    REPRESENTATIVE = "representative", _("Consent of the legal representative")


class Request(models.Model):
    """A tele-expertise request: one patient, one question, one answer."""

    class State(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SENT = "sent", _("Sent")
        ACCEPTED = "accepted", _("Accepted")
        INFO_REQUESTED = "info_requested", _("More information requested")
        DECLINED = "declined", _("Declined")
        ANSWERED = "answered", _("Answered")
        CLOSED = "closed", _("Closed")
        CANCELLED = "cancelled", _("Cancelled")

    # The expert's clock runs in these states (the deadline is watched).
    OPEN_STATES = (State.SENT, State.ACCEPTED)
    # The pool is reminded when a quarter of the expected delay is left (6 h for an urgent
    # request): expertise.deadlines sends it, the queue shows it.
    REMINDER_SHARE = 0.25
    ENDED_STATES = (State.ANSWERED, State.CLOSED, State.CANCELLED)

    class Outcome(models.TextChoices):
        # The programme counts an exam avoided and a transfer avoided apart (issue 17).
        EXAM_AVOIDED = "exam_avoided", _("Yes: an exam was avoided")
        TRANSFER_AVOIDED = "transfer_avoided", _("Yes: a transfer or a referral was avoided")
        # Before that split one answer said both: the requests closed then keep it (nobody
        # can tell which it was), the close-out form no longer offers it (OFFERED_OUTCOMES).
        AVOIDED = "avoided", _("Yes: a referral or an exam was avoided (former answer)")
        NOT_AVOIDED = "not_avoided", _("No: the patient still needs a referral or an exam")
        UNSURE = "unsure", _("Cannot tell yet")

    # What the close-out form offers (expertise.forms.CloseForm): the legacy answer is not.
    OFFERED_OUTCOMES = (
        Outcome.EXAM_AVOIDED,
        Outcome.TRANSFER_AVOIDED,
        Outcome.NOT_AVOIDED,
        Outcome.UNSURE,
    )
    # Every answer that says something was avoided (the indicators' "avoided").
    AVOIDED_OUTCOMES = (Outcome.EXAM_AVOIDED, Outcome.TRANSFER_AVOIDED, Outcome.AVOIDED)

    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="expertise_requests"
    )
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="expertise_requests"
    )
    requester_establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    specialty = models.CharField(_("specialty asked"), max_length=40, choices=Specialty.choices)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="requests")
    # The named expert the requester chose, or the expert of the pool who claimed it.
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="expertise_assignments",
    )
    urgency = models.CharField(
        _("urgency"), max_length=10, choices=Urgency.choices, default=Urgency.ROUTINE
    )
    question = models.TextField(_("question"))
    clinical_context = models.TextField(_("clinical context"), blank=True)
    studies = models.ManyToManyField(
        "imaging.Study", blank=True, related_name="expertise_requests", verbose_name=_("studies")
    )
    # The live review of the request's images, opened by the expert or the requester
    # (services.review_start): the request owns its room, imaging knows nothing of it. A room
    # is only where the images are shown: were it gone, the request would stay and open another.
    review_room = models.OneToOneField(
        "imaging.ReviewRoom", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The patient is informed and consents (CSP R6316-2); asked before sending.
    patient_informed = models.BooleanField(_("the patient was informed"), default=False)
    consent_date = models.DateField(_("consent date"), null=True, blank=True)
    consent_method = models.CharField(
        _("consent obtained"), max_length=16, choices=ConsentMethod.choices, blank=True
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    # Every saved change moves it: an edit made on an older one is refused.
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # When the expected answer is due; moved on while the expert waits for the requester.
    due_at = models.DateTimeField(null=True, blank=True)
    # The pool's delay for this urgency when the request was sent (see expected_delay).
    delay = models.DurationField(null=True, blank=True)
    info_requested_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    decline_reason = models.TextField(_("reason for declining"), blank=True)
    cancel_reason = models.TextField(_("reason for cancelling"), blank=True)
    outcome = models.CharField(
        _("did it avoid a referral or an exam?"), max_length=20, choices=Outcome.choices, blank=True
    )

    class Meta:
        verbose_name = _("tele-expertise request")
        verbose_name_plural = _("tele-expertise requests")
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["pool", "state", "sent_at"], name="request_pool_queue_idx"),
            models.Index(fields=["requester", "state"], name="request_requester_idx"),
            models.Index(fields=["expert", "state"], name="request_expert_idx"),
            models.Index(fields=["state", "due_at"], name="request_deadline_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                # A draft may be cancelled before it was ever sent.
                condition=Q(state__in=["draft", "cancelled"])
                | Q(sent_at__isnull=False, due_at__isnull=False),
                name="request_sent_has_deadline",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=["accepted", "info_requested", "answered", "closed"])
                | Q(expert__isnull=False, accepted_at__isnull=False),
                name="request_accepted_has_expert",
            ),
            models.CheckConstraint(
                condition=Q(state="draft")
                | Q(state="cancelled")
                | Q(patient_informed=True, consent_date__isnull=False) & ~Q(consent_method=""),
                name="request_sent_has_consent",
            ),
        ]

    def __str__(self):
        return _("Request %(number)s") % {"number": self.pk}

    @property
    def expected_delay(self) -> dt.timedelta:
        """The delay the pool committed to when the request was sent (its current one for a
        draft): changing a pool's delays moves no deadline already given."""
        if self.delay is not None:
            return self.delay
        return self.pool.delay_for(self.urgency)

    @property
    def expected_hours(self) -> int:
        return int(self.expected_delay.total_seconds() // 3600)

    @property
    def answer_hours(self) -> float | None:
        """Hours from sending to the report, for the boards (None until answered)."""
        if self.sent_at is None or self.answered_at is None:
            return None
        return round((self.answered_at - self.sent_at).total_seconds() / 3600, 1)

    @property
    def answered_in_time(self) -> bool:
        return (
            self.answered_at is not None
            and self.due_at is not None
            and (self.answered_at <= self.due_at)
        )

    @property
    def is_overdue(self) -> bool:
        return (
            self.state in self.OPEN_STATES
            and self.due_at is not None
            and self.due_at < timezone.now()
        )

    def is_due_soon_at(self, now: dt.datetime) -> bool:
        if self.state not in self.OPEN_STATES or self.due_at is None:
            return False
        return self.due_at - self.expected_delay * self.REMINDER_SHARE <= now < self.due_at

    @property
    def is_due_soon(self) -> bool:
        return self.is_due_soon_at(timezone.now())


class RequestEvent(models.Model):
    """One step of the request's life, shown as its timeline (the audit trail has it too)."""

    request = models.ForeignKey(Request, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Action(models.TextChoices):
        CREATED = "created", _("Request written")
        EDITED = "edited", _("Request edited")
        SENT = "sent", _("Request sent")
        CLAIMED = "claimed", _("Request accepted")
        DECLINED = "declined", _("Request declined")
        INFO_REQUESTED = "info_requested", _("More information requested")
        INFO_GIVEN = "info_given", _("Information given")
        ANSWERED = "answered", _("Report signed and sent")
        CLOSED = "closed", _("Request closed")
        CANCELLED = "cancelled", _("Request cancelled")
        REDRAFTED = "redrafted", _("Request reopened as a draft")
        REMINDED = "reminded", _("Deadline near: pool reminded")
        ESCALATED = "escalated", _("Deadline passed: coordinator alerted")

    action = models.CharField(max_length=16, choices=Action.choices)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["action", "request"], name="request_event_action_idx")]

    def __str__(self):
        return f"{self.from_state} -> {self.to_state}"


class Attachment(UploadedFile):
    """A document or photo given with the request or in the conversation."""

    class Kind(models.TextChoices):
        PHOTO = "photo", _("Photo")
        DOCUMENT = "document", _("Document")

    request = models.ForeignKey(Request, on_delete=models.CASCADE, related_name="attachments")
    message = models.ForeignKey(
        "Message", on_delete=models.CASCADE, null=True, blank=True, related_name="attachments"
    )
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to="expertise/attachments/%Y/%m/")

    class Meta:
        ordering = ["uploaded_at", "pk"]


class Message(models.Model):
    """The conversation between the requester and the expert."""

    class Kind(models.TextChoices):
        MESSAGE = "message", _("Message")
        QUESTION = "question", _("Request for more information")
        REPLY = "reply", _("Information given")

    request = models.ForeignKey(Request, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.MESSAGE)
    body = models.TextField(_("message"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["request", "created_at"], name="message_thread_idx")]

    def __str__(self):
        return self.body[:50]


class Report(models.Model):
    """The expert's answer. Locked once signed and sent: it is the record of the act."""

    request = models.OneToOneField(Request, on_delete=models.PROTECT, related_name="report")
    findings = models.TextField(_("findings"))
    conclusion = models.TextField(_("conclusion"))
    recommendation = models.TextField(_("recommendation"), blank=True)
    needs_consultation = models.BooleanField(
        _("an in-person consultation is needed"), default=False
    )
    needs_exam = models.BooleanField(_("another exam is needed"), default=False)
    exam_detail = models.CharField(_("which exam"), max_length=200, blank=True)
    revision = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(default=timezone.now)
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    # Who signed, as they were then (a profile may change later), and a digest of the text.
    signer_name = models.CharField(max_length=200, blank=True)
    signer_rpps = models.CharField(max_length=11, blank=True)
    content_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(signed_at__isnull=True) | ~Q(content_sha256=""),
                name="report_signed_has_digest",
            )
        ]

    def __str__(self):
        return _("Report of request %(number)s") % {"number": self.request_id}

    @property
    def is_locked(self) -> bool:
        return self.signed_at is not None


class ReportDocument(GeneratedDocument):
    """The PDF of a signed report, rendered by Celery and kept with its SHA-256
    (portal.documents)."""

    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="documents")
    file = models.FileField(upload_to="expertise/pdf/%Y/%m/", blank=True)
    # Sent once, after the first successful rendering.
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta(GeneratedDocument.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["report"],
                condition=~Q(status="failed"),
                name="report_document_one_live",
            )
        ]

    def __str__(self):
        return f"report {self.report_id} ({self.status})"


# --- Billing records -------------------------------------------------------------------------


class Act(models.Model):
    """A billing record of an answered request (Assurance Maladie avenant 9, 2022)."""

    class Code(models.TextChoices):
        TE2 = "TE2", _("TE2 — tele-expertise by the expert")
        RQD = "RQD", _("RQD — tele-expertise request by the requester")

    AMOUNT_CENTS = {Code.TE2: 2000, Code.RQD: 1000}
    # At most four acts a year per patient (with the same expert, as the portal counts them).
    ANNUAL_LIMIT = 4

    request = models.ForeignKey(Request, on_delete=models.PROTECT, related_name="acts")
    code = models.CharField(max_length=3, choices=Code.choices)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    professional = models.ForeignKey(Professional, on_delete=models.PROTECT, related_name="+")
    # Copied: the billing record reads the same after a profile changes.
    professional_name = models.CharField(max_length=200)
    professional_rpps = models.CharField(max_length=11, blank=True)
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The professional on the other side of the act (the expert for an RQD, and back).
    counterpart_name = models.CharField(max_length=200)
    counterpart_rpps = models.CharField(max_length=11, blank=True)
    act_date = models.DateField()
    amount_cents = models.PositiveIntegerField()
    # The fifth act of the year for this patient and expert: recorded, flagged, not billable.
    over_annual_limit = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("act")
        verbose_name_plural = _("acts")
        ordering = ["act_date", "pk"]
        permissions = [("export_acts", _("Can export the tele-expertise acts for billing"))]
        constraints = [
            models.UniqueConstraint(fields=["request", "code"], name="act_one_per_code"),
        ]
        indexes = [
            models.Index(fields=["establishment", "act_date"], name="act_establishment_idx"),
            models.Index(fields=["patient", "code", "act_date"], name="act_patient_idx"),
        ]

    def __str__(self):
        return f"{self.code} {self.act_date}"
