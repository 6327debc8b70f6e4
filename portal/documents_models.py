"""The abstract model of the documents the portal generates (portal/documents.py): apart, so
that the apps' models inherit it without importing the machinery that makes the files."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class GeneratedDocument(models.Model):
    """A PDF made by a Celery task from a record and kept with its SHA-256, checked again at
    every download. Subclasses add their subject (foreign keys), their constraints (which
    documents may be live at once) and ``file`` with their ``upload_to``."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        RUNNING = "running", _("In progress")
        RETRYING = "retrying", _("Retrying")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    IN_FLIGHT = (Status.PENDING, Status.RUNNING, Status.RETRYING)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    file = models.FileField(blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    generated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def is_in_flight(self) -> bool:
        return self.status in self.IN_FLIGHT


class UploadedFile(models.Model):
    """A file a user gave (a pathology report on an RCP case, a photo with a tele-expertise
    request): what it is, its checked content type and size, who gave it and when. Subclasses
    add their subject, their kinds and ``file`` with their ``upload_to``; portal/uploads.py checks
    the file before it is kept."""

    title = models.CharField(_("title"), max_length=200)
    file = models.FileField(_("file"))
    content_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    uploaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def __str__(self):
        return self.title
