"""The abstract model of the documents the portal generates (portal/documents.py): apart, so
that the apps' models inherit it without importing the machinery that makes the files."""

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
