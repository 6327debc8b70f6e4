"""The shared domain: establishments, professionals, patients, care relationships, audit."""

import unicodedata

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length, Lower
from django.utils import timezone
from django.utils.translation import gettext, ngettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from portal.identifiers import validate_finess, validate_ins_matricule, validate_rpps

# --- Users and professionals -------------------------------------------------------------


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields["is_staff"] = True
        extra_fields["is_superuser"] = True
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    """A person who signs in: a professional, a coordinator, an auditor or an administrator."""

    username = None
    email = models.EmailField(_("e-mail address"), unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self):
        return self.get_full_name() or self.email


class EstablishmentKind(models.TextChoices):
    UNIVERSITY_HOSPITAL = "chu", _("University hospital")
    REGIONAL_HOSPITAL = "chr", _("Regional hospital")
    HOSPITAL = "ch", _("Hospital")
    PRIVATE_CLINIC = "clinique", _("Private clinic")
    PRACTICE = "cabinet", _("Practice / health center")


class Establishment(models.Model):
    name = models.CharField(_("name"), max_length=200)
    finess = models.CharField(_("FINESS"), max_length=9, unique=True, validators=[validate_finess])
    city = models.CharField(_("city"), max_length=100)
    kind = models.CharField(_("kind"), max_length=10, choices=EstablishmentKind.choices)
    # Value of DICOM IssuerOfPatientID (0010,0021) in this establishment's images.
    patient_id_issuer = models.CharField(_("patient ID issuer"), max_length=64, blank=True)
    # MSH-4 of its HL7 feed when its patient administration system does not send the FINESS
    # there (portal.hl7): the code names one establishment only.
    hl7_sending_facility = models.CharField(
        _("HL7 sending facility"),
        max_length=64,
        blank=True,
        help_text=_("MSH-4 of its HL7 messages, when it is not the FINESS."),
    )
    # Whom the region's administrators and the other establishments call about the portal.
    contact_name = models.CharField(_("contact person"), max_length=200, blank=True)
    contact_phone = models.CharField(_("contact phone"), max_length=30, blank=True)
    contact_email = models.EmailField(_("contact e-mail"), blank=True)

    class Meta:
        verbose_name = _("establishment")
        verbose_name_plural = _("establishments")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["hl7_sending_facility"],
                condition=~Q(hl7_sending_facility=""),
                name="establishment_hl7_facility_unique",
            ),
        ]

    def __str__(self):
        return self.name


class Profession(models.TextChoices):
    PHYSICIAN = "medecin", _("Physician")
    MIDWIFE = "sage_femme", _("Midwife")
    NURSE = "infirmier", _("Nurse")
    COORDINATOR = "coordinateur", _("Coordinator / medical secretary")
    DATA_PROTECTION = "dpo", _("Data protection officer")
    IDENTITY_VIGILANCE = "identitovigilance", _("Identity-vigilance officer")
    OTHER = "autre", _("Other")


class Specialty(models.TextChoices):
    """Controlled list of specialties; the codes are stable, the labels translated."""

    MEDICAL_ONCOLOGY = "oncologie_medicale", _("Medical oncology")
    RADIOTHERAPY = "radiotherapie", _("Radiation oncology")
    THORACIC_SURGERY = "chirurgie_thoracique", _("Thoracic surgery")
    DIGESTIVE_SURGERY = "chirurgie_digestive", _("Digestive surgery")
    BREAST_SURGERY = "chirurgie_senologique", _("Breast surgery")
    GYNECOLOGIC_SURGERY = "chirurgie_gynecologique", _("Gynecologic surgery")
    UROLOGY = "urologie", _("Urology")
    ENT_SURGERY = "orl", _("ENT and head and neck surgery")
    NEUROSURGERY = "neurochirurgie", _("Neurosurgery")
    RADIOLOGY = "radiologie", _("Radiology")
    INTERVENTIONAL_RADIOLOGY = "radiologie_interventionnelle", _("Interventional radiology")
    NUCLEAR_MEDICINE = "medecine_nucleaire", _("Nuclear medicine")
    PATHOLOGY = "anatomopathologie", _("Pathology")
    PULMONOLOGY = "pneumologie", _("Pulmonology")
    GASTROENTEROLOGY = "gastroenterologie", _("Gastroenterology")
    HEMATOLOGY = "hematologie", _("Hematology")
    DERMATOLOGY = "dermatologie", _("Dermatology")
    CARDIOLOGY = "cardiologie", _("Cardiology")
    GERIATRICS = "geriatrie", _("Geriatrics")
    PALLIATIVE_CARE = "soins_palliatifs", _("Palliative care")
    GYNECOLOGY_OBSTETRICS = "gynecologie_obstetrique", _("Gynecology and obstetrics")
    FETAL_MEDICINE = "medecine_foetale", _("Fetal medicine and ultrasound")
    PEDIATRICS_NEONATOLOGY = "pediatrie_neonatologie", _("Pediatrics and neonatology")
    GENETICS = "genetique", _("Medical genetics")
    PSYCHIATRY = "psychiatrie", _("Psychiatry")
    GENERAL_PRACTICE = "medecine_generale", _("General practice")


class Professional(models.Model):
    """The professional profile of a user: who they are for patients and for colleagues."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="professional"
    )
    title = models.CharField(_("title"), max_length=10, blank=True, help_text=_("Dr, Pr, Mme…"))
    rpps = models.CharField(
        _("RPPS number"),
        max_length=11,
        unique=True,
        null=True,
        blank=True,
        validators=[validate_rpps],
        help_text=_("11 digits. Empty for staff without an RPPS number (coordinators)."),
    )
    profession = models.CharField(_("profession"), max_length=20, choices=Profession.choices)
    specialty = models.CharField(
        _("specialty"), max_length=40, choices=Specialty.choices, blank=True
    )
    establishments = models.ManyToManyField(
        Establishment,
        through="Affiliation",
        related_name="professionals",
        verbose_name=_("establishments"),
    )

    class Meta:
        verbose_name = _("professional")
        verbose_name_plural = _("professionals")
        ordering = ["user__last_name", "user__first_name"]

    def __str__(self):
        return self.display_name

    @property
    def display_name(self) -> str:
        name = self.user.get_full_name() or self.user.email
        return f"{self.title} {name}".strip()

    def primary_establishment(self) -> Establishment | None:
        # Affiliations are usually prefetched; avoid a query per professional in lists.
        affiliations = list(self.affiliations.all())
        for affiliation in affiliations:
            if affiliation.is_primary:
                return affiliation.establishment
        return affiliations[0].establishment if affiliations else None


class Affiliation(models.Model):
    professional = models.ForeignKey(
        Professional, on_delete=models.CASCADE, related_name="affiliations"
    )
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, related_name="affiliations"
    )
    is_primary = models.BooleanField(_("primary establishment"), default=False)

    class Meta:
        verbose_name = _("affiliation")
        verbose_name_plural = _("affiliations")
        constraints = [
            models.UniqueConstraint(
                fields=["professional", "establishment"], name="affiliation_unique"
            ),
            models.UniqueConstraint(
                fields=["professional"],
                condition=Q(is_primary=True),
                name="affiliation_one_primary",
            ),
        ]

    def __str__(self):
        return f"{self.professional} @ {self.establishment}"


# --- Patients ----------------------------------------------------------------------------


class Sex(models.TextChoices):
    FEMALE = "F", _("Female")
    MALE = "M", _("Male")
    UNDETERMINED = "I", _("Undetermined")


# "Used name (born Birth name)": the context lets French agree with the sex (née / né).
BORN_AS = {
    Sex.FEMALE: pgettext_lazy("patient sex F", "%(used)s (born %(birth)s)"),
    Sex.MALE: pgettext_lazy("patient sex M", "%(used)s (born %(birth)s)"),
    Sex.UNDETERMINED: pgettext_lazy("patient sex I", "%(used)s (born %(birth)s)"),
}


class IdentityStatus(models.TextChoices):
    """Identity status of the national identity-vigilance referential (RNIV)."""

    PROVISIONAL = "provisoire", _("Provisional")
    RETRIEVED = "recuperee", _("Retrieved")
    VALIDATED = "validee", _("Validated")
    QUALIFIED = "qualifiee", _("Qualified")


class InsOid(models.TextChoices):
    NIR = "1.2.250.1.213.1.4.8", _("NIR")
    NIA = "1.2.250.1.213.1.4.9", _("NIA")
    NIR_TEST = "1.2.250.1.213.1.4.10", _("NIR (test)")
    NIA_TEST = "1.2.250.1.213.1.4.11", _("NIA (test)")


def search_key(text: str) -> str:
    """Upper-case, accent-free form of a name, for searches that forgive accents and case."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper().strip()


class SharingOppositionSource(models.TextChoices):
    PORTAL = "portal", _("the portal")
    HL7 = "hl7", _("the HL7 feed")


class Patient(models.Model):
    """A patient with the five strict INS traits; the INS itself only once retrieved."""

    birth_name = models.CharField(_("birth name"), max_length=100)
    first_names = models.CharField(
        _("first names"), max_length=200, help_text=_("All first names, in birth order.")
    )
    used_name = models.CharField(_("used name"), max_length=100, blank=True)
    used_first_name = models.CharField(_("used first name"), max_length=100, blank=True)
    sex = models.CharField(_("sex"), max_length=1, choices=Sex.choices)
    birth_date = models.DateField(_("birth date"), db_index=True)
    birth_place_code = models.CharField(
        _("birth place code (INSEE)"), max_length=5, help_text=_("INSEE code; 99xxx abroad.")
    )
    ins_matricule = models.CharField(
        _("INS matricule"), max_length=15, blank=True, validators=[validate_ins_matricule]
    )
    ins_oid = models.CharField(_("INS OID"), max_length=32, choices=InsOid.choices, blank=True)
    identity_status = models.CharField(
        _("identity status"),
        max_length=12,
        choices=IdentityStatus.choices,
        default=IdentityStatus.PROVISIONAL,
    )
    # Search forms of the names, kept by the identity services.
    name_search = models.CharField(max_length=600, editable=False, db_index=True)
    # The patient's opposition to the sharing of their data between establishments (Code de
    # la santé publique, L1110-4): each establishment then sees only its own studies. Set
    # and lifted only through portal.services (audited); the date says since when.
    sharing_opposed = models.BooleanField(
        _("opposes sharing between establishments"), default=False
    )
    sharing_opposed_at = models.DateTimeField(
        _("opposition recorded at"), null=True, blank=True, editable=False
    )
    # Where the patient's word came from (the patient page tells the next reader): the
    # portal page or an establishment's HL7 feed, the establishment holding the patient's
    # IPP that took it, and the user who recorded it (none for a feed). Empty while the
    # patient accepts sharing: the audit trail keeps the history.
    sharing_opposition_source = models.CharField(
        _("opposition recorded through"),
        max_length=6,
        choices=SharingOppositionSource.choices,
        blank=True,
        editable=False,
    )
    sharing_opposition_establishment = models.ForeignKey(
        Establishment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        verbose_name=_("opposition recorded by the establishment"),
    )
    sharing_opposition_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        verbose_name=_("opposition recorded by"),
    )
    # Set by portal.services.patient_merge on the record emptied into the survivor (HL7 A40):
    # kept for its audit trail, it names where the person's data went.
    merged_into = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="merged_records",
        verbose_name=_("merged into"),
    )
    merged_at = models.DateTimeField(_("merged at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("patient")
        verbose_name_plural = _("patients")
        ordering = ["birth_name", "first_names", "birth_date"]
        constraints = [
            models.UniqueConstraint(
                fields=["ins_matricule", "ins_oid"],
                condition=~Q(ins_matricule=""),
                name="patient_ins_unique",
            ),
            models.CheckConstraint(
                condition=~Q(identity_status="qualifiee") | (~Q(ins_matricule="") & ~Q(ins_oid="")),
                name="patient_qualified_has_ins",
            ),
            models.CheckConstraint(
                condition=Q(ins_matricule="", ins_oid="") | (~Q(ins_matricule="") & ~Q(ins_oid="")),
                name="patient_ins_matricule_with_oid",
            ),
            # Who recorded an opposition describes a current one only.
            models.CheckConstraint(
                condition=Q(sharing_opposed=True)
                | Q(
                    sharing_opposition_source="",
                    sharing_opposition_establishment__isnull=True,
                    sharing_opposition_by__isnull=True,
                ),
                name="patient_opposition_source_when_opposed",
            ),
        ]
        indexes = [models.Index(fields=["ins_matricule"], name="patient_ins_idx")]

    def __str__(self):
        return f"{self.display_name} ({self.birth_date:%d/%m/%Y})"

    @property
    def display_name(self) -> str:
        first = self.used_first_name or self.first_names.split(" ")[0]
        name = self.birth_name.upper()
        if self.used_name and search_key(self.used_name) != search_key(self.birth_name):
            name = str(BORN_AS[self.sex]) % {
                "used": self.used_name.upper(),
                "birth": self.birth_name.upper(),
            }
        return f"{name} {first}"

    @property
    def ins_shareable(self) -> bool:
        """Only a qualified identity may carry and share the INS (ANS INS referential)."""
        return self.identity_status == IdentityStatus.QUALIFIED and bool(self.ins_matricule)

    def ins_for_output(self) -> tuple[str, str] | None:
        return (self.ins_matricule, self.ins_oid) if self.ins_shareable else None


class PatientUserObjectPermission(UserObjectPermissionBase):
    """Direct foreign-key table for guardian: permission filters join on an indexed key."""

    content_object = models.ForeignKey(Patient, on_delete=models.CASCADE)


class PatientGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Patient, on_delete=models.CASCADE)


class PatientIdentifier(models.Model):
    """A local identifier (IPP) of the patient in one establishment."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="identifiers")
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, related_name="patient_identifiers"
    )
    value = models.CharField(_("IPP"), max_length=64)

    class Meta:
        verbose_name = _("local identifier")
        verbose_name_plural = _("local identifiers")
        constraints = [
            models.UniqueConstraint(fields=["establishment", "value"], name="ipp_unique"),
        ]

    def __str__(self):
        return f"{self.establishment.finess}:{self.value}"


class IdentityConflictSource(models.TextChoices):
    MANUAL = "manual", _("Manual entry")
    DICOM = "dicom", _("DICOM import")
    IMPORT = "import", _("Identity feed")


class IdentityConflict(models.Model):
    """An identifier matched a patient but the traits disagreed: kept for review, never merged."""

    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="identity_conflicts"
    )
    source = models.CharField(max_length=10, choices=IdentityConflictSource.choices)
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, null=True, blank=True
    )
    matched_on = models.CharField(_("matched on"), max_length=20)
    incoming_traits = models.JSONField(_("incoming traits"))
    differing_traits = models.JSONField(_("differing traits"))
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    resolution = models.TextField(_("resolution"), blank=True)

    class Meta:
        verbose_name = _("identity conflict")
        verbose_name_plural = _("identity conflicts")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["resolved_at", "created_at"], name="conflict_open_idx")]

    def __str__(self):
        return f"{self.patient_id} ({self.matched_on})"


class CareRole(models.TextChoices):
    REFERRING = "referent", _("Referring doctor")
    GP = "traitant", _("General practitioner")
    CARE_TEAM = "equipe", _("Care team")


class GpDeclarationSource(models.TextChoices):
    """Where the declaration of a patient's general practitioner came from."""

    PORTAL = "portal", _("the portal")
    HL7 = "hl7", _("the HL7 feed")


class CareRelationship(models.Model):
    """Why a professional may see a patient. Object permissions follow these rows."""

    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, related_name="care_relationships"
    )
    professional = models.ForeignKey(
        Professional, on_delete=models.PROTECT, related_name="care_relationships"
    )
    role = models.CharField(_("role"), max_length=10, choices=CareRole.choices)
    establishment = models.ForeignKey(
        Establishment, on_delete=models.PROTECT, null=True, blank=True
    )
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    # Who ended it and why (portal.services.care_relationship_end): empty for relationships
    # ended before the reason was asked, or by the portal itself.
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    end_reason = models.TextField(_("reason for leaving the care team"), blank=True)
    # A declared GP ("médecin traitant", portal.gp.gp_declare): the start date the declaration
    # gives (the patient's choice may predate the portal's row, started_at), and whether it
    # came from the portal or an establishment's HL7 feed (then ``establishment`` is the
    # sender). Empty for the other roles and for GP rows made before declarations.
    started_on = models.DateField(_("declared since"), null=True, blank=True)
    source = models.CharField(
        _("declared through"), max_length=6, choices=GpDeclarationSource.choices, blank=True
    )

    class Meta:
        verbose_name = _("care relationship")
        verbose_name_plural = _("care relationships")
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "professional", "role"],
                condition=Q(ended_at__isnull=True),
                name="care_relationship_active_unique",
            ),
            models.UniqueConstraint(
                fields=["patient"],
                condition=Q(ended_at__isnull=True, role="traitant"),
                name="care_relationship_one_gp",
            ),
        ]
        indexes = [models.Index(fields=["professional", "ended_at"], name="care_prof_active_idx")]

    def __str__(self):
        return f"{self.professional} → {self.patient_id} ({self.role})"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None


# --- In-portal notifications ---------------------------------------------------------------


def render_notification_text(*, msgid: str, msgid_plural: str, params: dict, fallback: str) -> str:
    """A notification's message in the active language, from its English source and
    parameters. A parameter given as ``{"msgid": "..."}`` (a specialty, a state) is
    translated too. A source the catalogue or the parameters no longer fit falls back to the
    text stored when the notification was left."""
    if not msgid:
        return fallback
    values = {
        key: gettext(value["msgid"]) if isinstance(value, dict) and "msgid" in value else value
        for key, value in (params or {}).items()
    }
    if msgid_plural:
        try:
            count = int(values.get("count", 0))
        except (TypeError, ValueError):
            return fallback
        template = ngettext(msgid, msgid_plural, count)
    else:
        template = gettext(msgid)
    try:
        return template % values
    except (KeyError, TypeError, ValueError):
        return fallback


class Notification(models.Model):
    """A message for one user. Never carries patient identity: the link leads to it.

    The message is kept as its English source (``msgid``, ``msgid_plural`` with a ``count``
    parameter) and its parameters, and rendered when read, in the reader's language
    (:attr:`text`). ``message`` holds the text in the portal's language when it was left: what
    older rows (left before the source was stored) show, and the fallback."""

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    message = models.CharField(max_length=300)
    msgid = models.TextField(blank=True, default="")
    msgid_plural = models.TextField(blank=True, default="")
    params = models.JSONField(blank=True, default=dict)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["recipient", "read_at"], name="notification_unread_idx")]

    def __str__(self):
        return self.text

    @property
    def text(self) -> str:
        """The message in the active language (the reader's): what every page shows."""
        return render_notification_text(
            msgid=self.msgid,
            msgid_plural=self.msgid_plural,
            params=self.params,
            fallback=self.message,
        )


# --- Audit trail ---------------------------------------------------------------------------


class AuditEventId(models.TextChoices):
    """EventID codes of DICOM PS3.15 Annex A.5 (IHE ATNA), scheme DCM."""

    APPLICATION_ACTIVITY = "110100", _("Application activity")
    AUDIT_LOG_USED = "110101", _("Audit log used")
    INSTANCES_ACCESSED = "110103", _("DICOM instances accessed")
    INSTANCES_TRANSFERRED = "110104", _("DICOM instances transferred")
    STUDY_DELETED = "110105", _("DICOM study deleted")
    EXPORT = "110106", _("Export")
    IMPORT = "110107", _("Import")
    PATIENT_RECORD = "110110", _("Patient record")
    QUERY = "110112", _("Query")
    SECURITY_ALERT = "110113", _("Security alert")
    USER_AUTHENTICATION = "110114", _("User authentication")
    EMERGENCY_OVERRIDE = "110127", _("Emergency override")


class AuditEventType(models.TextChoices):
    """EventTypeCode refinements (DCM) used with the event ids above."""

    NONE = "", "—"
    LOGIN = "110122", _("Login")
    LOGOUT = "110123", _("Logout")
    SOFTWARE_CONFIGURATION = "110131", _("Software configuration")
    OBJECT_SECURITY_ATTRIBUTES_CHANGED = "110135", _("Object security attributes changed")
    SECURITY_ROLES_CHANGED = "110136", _("Security roles changed")
    USER_SECURITY_ATTRIBUTES_CHANGED = "110137", _("User security attributes changed")
    EMERGENCY_OVERRIDE_STOPPED = "110138", _("Emergency override stopped")


class AuditAction(models.TextChoices):
    CREATE = "C", _("Create")
    READ = "R", _("Read")
    UPDATE = "U", _("Update")
    DELETE = "D", _("Delete")
    EXECUTE = "E", _("Execute")


class AuditOutcome(models.IntegerChoices):
    SUCCESS = 0, _("Success")
    MINOR_FAILURE = 4, _("Minor failure")
    SERIOUS_FAILURE = 8, _("Serious failure")
    MAJOR_FAILURE = 12, _("Major failure")


class AuditPurpose(models.TextChoices):
    CARE = "soins", _("Care")
    RCP = "rcp", _("Multidisciplinary meeting")
    EXPERTISE = "expertise", _("Tele-expertise")
    ADMINISTRATION = "administration", _("Administration")
    AUDIT = "audit", _("Audit")
    EMERGENCY = "urgence", _("Emergency")


class AppendOnlyError(Exception):
    pass


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit events are append-only.")

    def delete(self):
        raise AppendOnlyError("Audit events are append-only.")


class AuditEvent(models.Model):
    """One access to patient data or one security event. Written once, never changed.

    The actor's names are copied, not only linked, so the trail still reads the same
    after a profile changes.
    """

    occurred_at = models.DateTimeField(_("date (UTC)"), default=timezone.now, db_index=True)
    event_id = models.CharField(_("event"), max_length=6, choices=AuditEventId.choices)
    event_type = models.CharField(
        _("event type"), max_length=6, choices=AuditEventType.choices, blank=True
    )
    action = models.CharField(_("action"), max_length=1, choices=AuditAction.choices)
    outcome = models.PositiveSmallIntegerField(_("outcome"), choices=AuditOutcome.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    actor_name = models.CharField(_("actor name"), max_length=200, blank=True)
    actor_rpps = models.CharField(_("actor RPPS"), max_length=11, blank=True)
    actor_establishment = models.CharField(
        _("actor establishment (FINESS)"), max_length=9, blank=True
    )
    session_hash = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    object_type = models.CharField(_("object type"), max_length=40, blank=True)
    object_id = models.CharField(_("object id"), max_length=100, blank=True)
    patient = models.ForeignKey(
        Patient,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("patient"),
    )
    purpose = models.CharField(
        _("purpose"), max_length=20, choices=AuditPurpose.choices, blank=True
    )
    query = models.CharField(_("query"), max_length=500, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    # The trail is a hash chain (portal.audit): each event seals the one before it, so a
    # row altered, removed or slipped in shows as the first broken link (audit_verify).
    previous_hash = models.CharField(_("previous event's hash"), max_length=64, editable=False)
    event_hash = models.CharField(_("hash"), max_length=64, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["patient", "occurred_at"], name="audit_patient_idx"),
            models.Index(fields=["actor", "occurred_at"], name="audit_actor_idx"),
            models.Index(fields=["event_id", "occurred_at"], name="audit_event_idx"),
        ]
        constraints = [
            # Two events sealing the same predecessor would fork the chain.
            models.UniqueConstraint(fields=["previous_hash"], name="audit_chain_no_fork"),
            # A row written around portal.audit.record carries no hash: refuse it.
            models.CheckConstraint(
                condition=models.lookups.Exact(Length("event_hash"), 64),
                name="audit_event_is_sealed",
            ),
        ]

    def __str__(self):
        return (
            f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.event_id} {self.action} {self.actor_name}"
        )

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only.")


# --- Access without a care relationship: access requests and emergency access ----------------


class AccessRequestState(models.TextChoices):
    PENDING = "en_attente", _("Pending")
    GRANTED = "accordee", _("Granted")
    REFUSED = "refusee", _("Refused")


class AccessRequest(models.Model):
    """A professional who found a patient (portal.access_requests.patient_lookup) asks for the
    record with a reason; the referring doctor or the establishment's administration grants or
    refuses. A grant opens the record until ``ends_at`` (portal.selectors.patients_visible_to
    compares it with the clock in the query: nothing stays open when no job ran); ``closed_at``
    is the job's note that the end was recorded in the audit trail."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="access_requests")
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests"
    )
    reason = models.TextField(_("reason"))
    state = models.CharField(
        _("state"),
        max_length=12,
        choices=AccessRequestState.choices,
        default=AccessRequestState.PENDING,
    )
    revision = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    answered_at = models.DateTimeField(null=True, blank=True)
    answer_comment = models.TextField(_("comment"), blank=True)
    ends_at = models.DateTimeField(_("access until"), null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("access request")
        verbose_name_plural = _("access requests")
        ordering = ["-created_at"]
        constraints = [
            # One open question per professional and patient: a second click asks nothing new.
            models.UniqueConstraint(
                fields=["patient", "requester"],
                condition=Q(state="en_attente"),
                name="access_request_one_pending",
            ),
        ]
        indexes = [
            models.Index(fields=["requester", "state", "ends_at"], name="access_request_grant_idx")
        ]

    def __str__(self):
        return f"{self.requester_id} → {self.patient_id} ({self.state})"

    def is_open_at(self, moment) -> bool:
        return (
            self.state == AccessRequestState.GRANTED
            and self.ends_at is not None
            and self.ends_at > moment
        )


class EmergencyReview(models.TextChoices):
    PENDING = "a_revoir", _("To review")
    JUSTIFIED = "justifie", _("Justified")
    INVESTIGATE = "a_instruire", _("To investigate")


class EmergencyAccess(models.Model):
    """An emergency access ("bris de glace"): a clinician opened a record he had no right to,
    for the reason given, until ``ends_at``. It overrides the patient's opposition to sharing
    while it lasts; the data protection officer reviews every one."""

    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, related_name="emergency_accesses"
    )
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="emergency_accesses"
    )
    reason = models.TextField(_("reason"))
    started_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(_("access until"))
    closed_at = models.DateTimeField(null=True, blank=True)
    review = models.CharField(
        _("review"), max_length=12, choices=EmergencyReview.choices, default=EmergencyReview.PENDING
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_comment = models.TextField(_("comment"), blank=True)

    class Meta:
        verbose_name = _("emergency access")
        verbose_name_plural = _("emergency accesses")
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["holder", "ends_at"], name="emergency_holder_idx")]

    def __str__(self):
        return f"{self.holder_id} → {self.patient_id} ({self.started_at:%Y-%m-%d %H:%M})"


# The directory's tables live in their own module; imported here so that Django registers them.
from portal.directory_models import (  # noqa: E402, F401
    DirectoryActivity,
    DirectoryImport,
    DirectoryPerson,
)
from portal.notification_models import (  # noqa: E402, F401
    NotificationDigest,
    NotificationPreference,
)
from portal.psc_models import ProviderSession  # noqa: E402, F401
