"""The national directory of health professionals (Annuaire Santé / RPPS), as imported from its
public extract by ``manage.py directory_import``. Its own tables, apart from the portal's users:
a person in the directory is not an account (Pro Santé Connect makes accounts, later)."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class DirectoryImport(models.Model):
    """One run of the import, so that the admin can show the last one and its summary."""

    file_name = models.CharField(_("file"), max_length=255)
    # With the name, what tells the scheduled refresh that a file was imported already.
    file_size = models.BigIntegerField(_("size (bytes)"), null=True, blank=True)
    file_modified_at = models.DateTimeField(_("file modified at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # Text: a national configuration lists every department (over 300 characters).
    departments = models.TextField(_("departments"), blank=True)
    counts = models.JSONField(_("counts"), default=dict, blank=True)
    # The first errors only: a broken national file must not make a run record of megabytes.
    errors_sample = models.JSONField(_("skipped lines (sample)"), default=list, blank=True)
    failure = models.TextField(_("failure"), blank=True)

    class Meta:
        verbose_name = _("directory import")
        verbose_name_plural = _("directory imports")
        ordering = ["-started_at"]

    def __str__(self):
        return f"{self.file_name} ({self.started_at:%Y-%m-%d %H:%M})"


class DirectoryIdType(models.TextChoices):
    RPPS = "8", "RPPS"
    ADELI = "0", "ADELI"


class DirectoryPerson(models.Model):
    """A professional of the extract, by national identifier; never deleted, made inactive when a
    newer extract (of the same region) no longer lists them."""

    national_id = models.CharField(_("national identifier"), max_length=20, unique=True)
    id_type = models.CharField(_("identifier type"), max_length=1, choices=DirectoryIdType.choices)
    # The RPPS alone (national_id without its type prefix), the key to portal.Professional.rpps.
    rpps = models.CharField(_("RPPS number"), max_length=11, blank=True, db_index=True)
    civility = models.CharField(_("civility"), max_length=40, blank=True)
    last_name = models.CharField(_("last name"), max_length=100, blank=True)
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    profession_code = models.CharField(_("profession code"), max_length=10, blank=True)
    profession_label = models.CharField(_("profession"), max_length=100, blank=True)
    specialty_label = models.CharField(_("specialty (directory)"), max_length=200, blank=True)
    # portal.models.Specialty's code where the label maps to one, else blank (the label stays).
    specialty = models.CharField(_("specialty"), max_length=40, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    last_import = models.ForeignKey(
        DirectoryImport,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("last import"),
    )

    class Meta:
        verbose_name = _("directory professional")
        verbose_name_plural = _("directory professionals")
        ordering = ["last_name", "first_name"]

    def __str__(self):
        return f"{self.civility} {self.first_name} {self.last_name} ({self.national_id})".strip()


class DirectoryActivity(models.Model):
    """One practice site of a person, as one line of the extract; in-region lines only."""

    person = models.ForeignKey(DirectoryPerson, on_delete=models.CASCADE, related_name="activities")
    # A digest of the activity's fields: a rerun finds the same row instead of replacing it.
    fingerprint = models.CharField(max_length=64)
    finess_site = models.CharField(_("FINESS (site)"), max_length=9, blank=True)
    finess_legal = models.CharField(_("FINESS (legal entity)"), max_length=9, blank=True)
    structure_id = models.CharField(_("structure identifier"), max_length=40, blank=True)
    name = models.CharField(_("name"), max_length=200, blank=True)
    practice_mode = models.CharField(_("practice mode"), max_length=40, blank=True)
    sector_code = models.CharField(_("sector code"), max_length=10, blank=True)
    sector_label = models.CharField(_("sector"), max_length=200, blank=True)
    commune = models.CharField(_("commune"), max_length=100, blank=True)
    department = models.CharField(_("department"), max_length=3, blank=True)
    last_import = models.ForeignKey(
        DirectoryImport,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("last import"),
    )

    class Meta:
        verbose_name = _("directory activity")
        verbose_name_plural = _("directory activities")
        constraints = [
            models.UniqueConstraint(
                fields=["person", "fingerprint"], name="directory_activity_unique_fingerprint"
            )
        ]

    def __str__(self):
        return f"{self.name or self.finess_site} ({self.department})"
