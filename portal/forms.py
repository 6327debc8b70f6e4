from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.administration import ESTABLISHMENT_FIELDS
from portal.identifiers import validate_ins_matricule
from portal.models import (
    AuditEventId,
    AuditOutcome,
    CareRole,
    Establishment,
    IdentityStatus,
    InsOid,
    Professional,
    Sex,
)
from portal.notification_models import EmailFrequency


class DateInput(forms.DateInput):
    """An ``<input type="date">`` for every date field of the portal.

    The browser only takes an ISO value (HTML, "valid date string"): Django would otherwise
    localise it to the French dd/mm/yyyy, which the browser shows empty and then posts back
    empty, erasing the date on the next save. The browser posts ISO too, which DateField
    accepts in every language (ISO_INPUT_FORMATS).
    """

    input_type = "date"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%d", **kwargs)


class DateTimeLocalInput(forms.DateTimeInput):
    """An ``<input type="datetime-local">``: ISO without seconds, for the same reason."""

    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


class PatientSearchForm(forms.Form):
    q = forms.CharField(
        label=_("Search"),
        required=False,
        max_length=100,
        widget=forms.TextInput(
            attrs={
                "type": "search",
                "placeholder": _("Name, birth date (dd/mm/yyyy) or INS"),
                "autocomplete": "off",
            }
        ),
    )


class PatientRegisterForm(forms.Form):
    birth_name = forms.CharField(label=_("Birth name"), max_length=100)
    first_names = forms.CharField(
        label=_("First names (birth order)"),
        max_length=200,
        help_text=_("All first names as on the birth certificate, separated by spaces."),
    )
    used_name = forms.CharField(label=_("Used name"), max_length=100, required=False)
    used_first_name = forms.CharField(label=_("Used first name"), max_length=100, required=False)
    sex = forms.ChoiceField(label=_("Sex"), choices=Sex.choices)
    birth_date = forms.DateField(label=_("Birth date"), widget=DateInput())
    birth_place_code = forms.RegexField(
        label=_("Birth place code (INSEE)"),
        regex=r"^(\d{5}|2[AB]\d{3})$",
        error_messages={"invalid": _("Enter the 5-character INSEE code of the birth place.")},
    )
    ins_matricule = forms.CharField(
        label=_("INS matricule"),
        max_length=15,
        required=False,
        validators=[validate_ins_matricule],
    )
    ins_oid = forms.ChoiceField(
        label=_("INS OID"), choices=[("", "—"), *InsOid.choices], required=False
    )
    identity_status = forms.ChoiceField(
        label=_("Identity status"),
        choices=IdentityStatus.choices,
        initial=IdentityStatus.PROVISIONAL,
    )
    establishment = forms.ModelChoiceField(
        label=_("Establishment of the IPP"), queryset=Establishment.objects.none(), required=False
    )
    ipp = forms.CharField(label=_("IPP"), max_length=64, required=False)
    role = forms.ChoiceField(label=_("Your role for this patient"), choices=CareRole.choices)

    def __init__(self, *args, professional: Professional, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["establishment"].queryset = professional.establishments.all()

    def clean(self):
        data = super().clean()
        if bool(data.get("ins_matricule")) != bool(data.get("ins_oid")):
            raise forms.ValidationError(_("Enter both the INS matricule and its OID, or neither."))
        if bool(data.get("ipp")) != bool(data.get("establishment")):
            raise forms.ValidationError(_("An IPP needs its establishment."))
        if data.get("identity_status") == IdentityStatus.QUALIFIED and not data.get(
            "ins_matricule"
        ):
            raise forms.ValidationError(_("A qualified identity must carry its INS."))
        return data


class CareTeamAddForm(forms.Form):
    professional = forms.ModelChoiceField(
        label=_("Professional"), queryset=Professional.objects.none()
    )

    def __init__(self, *args, professionals, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["professional"].queryset = professionals


class CareTeamEndForm(forms.Form):
    reason = forms.CharField(
        label=_("Why does this professional leave the care team?"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": _("Say why this professional leaves the care team.")},
    )


class SharingOppositionForm(forms.Form):
    """The state the user confirms (not a toggle): a page left open, then posted after a
    colleague changed it, changes nothing."""

    opposed = forms.TypedChoiceField(
        choices=[("1", "1"), ("0", "0")],
        coerce=lambda value: value == "1",
        widget=forms.HiddenInput,
    )


class AuditFilterForm(forms.Form):
    date_from = forms.DateField(label=_("From"), required=False, widget=DateInput())
    date_to = forms.DateField(label=_("To"), required=False, widget=DateInput())
    actor = forms.CharField(label=_("Actor (name, e-mail or RPPS)"), required=False, max_length=200)
    event_id = forms.ChoiceField(
        label=_("Event"), required=False, choices=[("", _("All")), *AuditEventId.choices]
    )
    outcome = forms.TypedChoiceField(
        label=_("Outcome"),
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", _("All")), *AuditOutcome.choices],
    )
    patient = forms.IntegerField(label=_("Patient number"), required=False, min_value=1)


class AuditSearchForm(AuditFilterForm):
    """The audit trail's filters, with the patient found by what the DPO knows of them (a
    name, a birth date, an INS or an IPP); the patient chosen among the matches travels as a
    hidden field, never typed."""

    q = forms.CharField(
        label=_("Patient (name, birth date, INS or IPP)"),
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"type": "search", "autocomplete": "off"}),
    )
    patient = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput())
    field_order = ["q", "date_from", "date_to", "actor", "event_id", "outcome", "patient"]


class EstablishmentForm(forms.ModelForm):
    """An establishment's identity and contacts (the regional administrator's page). ``seen``
    carries the values read, so that a concurrent edit is refused (portal.administration)."""

    seen = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Establishment
        # The fields the administration service writes and audits, in the same order.
        fields = list(ESTABLISHMENT_FIELDS)


class RoleChoiceForm(forms.Form):
    """A role among those the administrator may give (``choices``: code -> label)."""

    role = forms.ChoiceField(label=_("Role"))

    def __init__(self, *args, choices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = list(choices)


class RoleGrantByEmailForm(RoleChoiceForm):
    """Granting a role to an existing account that is not in the directory (a data
    protection officer, a billing office has no RPPS)."""

    email = forms.EmailField(label=_("E-mail address of an existing account"))


class AccessLetterForm(forms.Form):
    """The period of a patient's access letter and the establishment that answers (one of the
    patient's establishments, where the patient has an IPP: its letterhead)."""

    date_from = forms.DateField(label=_("From"), widget=DateInput())
    date_to = forms.DateField(label=_("To"), widget=DateInput())
    establishment = forms.ModelChoiceField(
        label=_("Letterhead"),
        queryset=Establishment.objects.none(),
        required=False,
        empty_label=_("The regional portal"),
    )

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["establishment"].queryset = Establishment.objects.filter(
            patient_identifiers__patient=patient
        ).order_by("name")

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError(_("The period must start before it ends."))
        return cleaned


class GpDeclareForm(forms.Form):
    """The declaration of the patient's GP (portal.gp.gp_declare): the person chosen in the
    directory lookup, the start date, and the GP relationship the page showed as current
    (empty: none), so that a declaration made meanwhile by someone else is not overwritten."""

    national_id = forms.CharField(widget=forms.HiddenInput, max_length=20)
    seen_current = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)
    started_on = forms.DateField(
        label=_("Declared GP since"),
        widget=DateInput(),
        help_text=_("The date the patient chose this GP: today or earlier."),
    )

    def clean_started_on(self):
        started_on = self.cleaned_data["started_on"]
        if started_on > timezone.localdate():
            raise forms.ValidationError(_("The GP's start date cannot be in the future."))
        return started_on


class NotificationPreferenceForm(forms.Form):
    """How the portal's e-mails reach their reader: one for each notification, one digest a
    day, or none; and the language they are written in."""

    email = forms.ChoiceField(
        label=_("Notification e-mails"),
        choices=EmailFrequency.choices,
        widget=forms.RadioSelect,
        help_text=_(
            "E-mails never name a patient: they say what happened and link to the page, where "
            "you sign in."
        ),
    )
    language = forms.ChoiceField(label=_("Language of the e-mails"), choices=settings.LANGUAGES)
