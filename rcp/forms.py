import json

from django import forms
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from imaging.models import Study
from portal.forms import DateInput, DateTimeLocalInput
from portal.models import Establishment, Specialty
from rcp import frcp
from rcp.models import Case, CaseDocument, Committee, CommitteeMember, Session

EMPTY = [("", "—")]


class CaseCreateForm(forms.Form):
    committee = forms.ModelChoiceField(
        label=_("Committee"), queryset=Committee.objects.order_by("name")
    )


class _RevisionForm(forms.Form):
    revision = forms.IntegerField(widget=forms.HiddenInput)


class CaseForm(_RevisionForm):
    """The fiche RCP of a cancer board; codes from the national value sets (FRCP)."""

    question = forms.CharField(
        label=_("Question asked to the meeting"),
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
    )
    presentation = forms.ChoiceField(
        label=_("Presentation"),
        choices=EMPTY + frcp.presentation_choices(),
        required=False,
        help_text=_("A standard case that fits the guideline may be only registered."),
    )
    nature = forms.ChoiceField(
        label=_("Meeting nature"), choices=EMPTY + frcp.NATURE_DISCUSSION.choices(), required=False
    )
    organ_system = forms.ChoiceField(
        label=_("Body system"),
        choices=EMPTY + frcp.APPAREIL.choices(),
        required=False,
        # static/js/fiche.js narrows the organ list to the chosen system's organs.
        widget=forms.Select(
            attrs={
                "data-organ-filter": "id_organ",
                "data-organs": json.dumps(frcp.ORGANS_BY_APPAREIL, separators=(",", ":")),
            }
        ),
    )
    organ = forms.ChoiceField(
        label=_("Organ"),
        choices=EMPTY + frcp.ORGANE.choices(),
        required=False,
        help_text=_("Choose the body system first: only its organs are offered."),
    )
    phase = forms.ChoiceField(
        label=_("Phase"), choices=EMPTY + frcp.PHASE.choices(), required=False
    )
    topography = forms.CharField(
        label=_("Diagnosis (ICD-10)"),
        required=False,
        help_text=_(
            "ICD-10 code of the primary tumour from the national list: type a code or words"
            " (e.g. C34.1, poumon) and choose."
        ),
    )
    morphology = forms.CharField(
        label=_("Histology (ICD-O-3)"),
        required=False,
        help_text=_(
            "ICD-O-3 code from the national list: type a code or words (e.g. 8140/3,"
            " adénocarcinome) and choose."
        ),
    )
    diagnosis_date = forms.DateField(
        label=_("Date of diagnosis"), required=False, widget=DateInput()
    )
    tnm_prefix = forms.ChoiceField(
        label=_("TNM prefix"), choices=EMPTY + frcp.TNM_PREFIXES, required=False
    )
    # max_length leaves room for a typed prefix and spaces: the stored category fits in 16.
    tnm_t = forms.CharField(
        label="T",
        required=False,
        max_length=24,
        help_text=_("UICC category, e.g. T2a, Tis, TX (2a or cT2a are read as T2a)."),
    )
    tnm_n = forms.CharField(
        label="N",
        required=False,
        max_length=24,
        help_text=_("UICC category, e.g. N1, N2b, N0(i+) (1 or pN1 are read as N1)."),
    )
    tnm_m = forms.CharField(
        label="M",
        required=False,
        max_length=24,
        help_text=_("UICC category, e.g. M0, M1b, M1(PUL,OSS) (0 or cM0 are read as M0)."),
    )
    performance_status = forms.ChoiceField(
        label=_("WHO performance status"), choices=EMPTY + frcp.OMS.choices(), required=False
    )
    history = forms.CharField(
        label=_("Relevant history"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    comorbidities = forms.CharField(
        label=_("Comorbidities"), widget=forms.Textarea(attrs={"rows": 2}), required=False
    )
    results = forms.CharField(
        label=_("Results and events"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    studies = forms.ModelMultipleChoiceField(
        label=_("Imaging studies to show in the meeting"),
        queryset=Study.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    CODE_LISTS = {
        "topography": ("rcp-codes-topography", frcp.topography_label),
        "morphology": ("rcp-codes-morphology", frcp.morphology_label),
    }

    # Choices from the national value sets: their labels are the official French ones, in
    # every language of the page (marked lang="fr", and said so to English readers). Not the
    # presentation: its two statuses are the portal's workflow, in the reader's language.
    FRCP_CHOICES = (
        "nature",
        "organ_system",
        "organ",
        "phase",
        "performance_status",
    )

    def __init__(self, *args, studies, **kwargs):
        super().__init__(*args, **kwargs)
        french = (get_language() or "fr").startswith("fr")
        for name in self.FRCP_CHOICES + tuple(self.CODE_LISTS):
            field = self.fields[name]
            if name in self.FRCP_CHOICES:
                field.widget.attrs["lang"] = "fr"
            if not french:
                hint = _("Official French labels of the national list.")
                field.help_text = f"{field.help_text} {hint}" if field.help_text else hint
        for name, (url_name, label_of) in self.CODE_LISTS.items():
            value = (self.data.get(name) if self.is_bound else self.initial.get(name)) or ""
            value = value.strip().upper() if name == "topography" else value.strip()
            # static/js/fiche.js turns these inputs into a search over the national list and
            # shows the chosen code's official (French) label after the input.
            self.fields[name].widget.attrs.update(
                {
                    "data-code-search": reverse(url_name),
                    "data-code-label": label_of(value) or "",
                    "autocomplete": "off",
                    "spellcheck": "false",
                }
            )
        self.fields["studies"].queryset = studies
        self.fields["studies"].label_from_instance = lambda study: " · ".join(
            filter(
                None,
                [
                    study.study_date.strftime("%d/%m/%Y") if study.study_date else "",
                    study.modalities,
                    study.description,
                ],
            )
        )

    def clean_topography(self):
        code = self.cleaned_data["topography"].strip().upper()
        if code and frcp.topography_label(code) is None:
            raise forms.ValidationError(_("Not an ICD-10 code of the national list."))
        return code

    def clean_morphology(self):
        code = self.cleaned_data["morphology"].strip()
        if code and frcp.morphology_label(code) is None:
            raise forms.ValidationError(_("Not an ICD-O-3 code of the national list."))
        return code

    TNM_EXAMPLES = {
        "T": "T2a, 2a, cT2a, Tis, TX",
        "N": "N1, 1, pN2b, N0(i+), NX",
        "M": "M0, 0, cM0, M1b, M1(PUL,OSS)",
    }

    def _clean_tnm(self, name, axis):
        read = frcp.read_tnm(self.cleaned_data[name], axis)
        if read is None:
            raise forms.ValidationError(
                _(
                    "Not a TNM category. Expected format: the %(axis)s category of the UICC TNM,"
                    " with or without its prefix (c, p, yc, yp, rc, rp), e.g. %(examples)s."
                )
                % {"axis": axis, "examples": self.TNM_EXAMPLES[axis]}
            )
        self._typed_prefixes[name] = read[0]
        return read[1]

    def clean_tnm_t(self):
        return self._clean_tnm("tnm_t", "T")

    def clean_tnm_n(self):
        return self._clean_tnm("tnm_n", "N")

    def clean_tnm_m(self):
        return self._clean_tnm("tnm_m", "M")

    def full_clean(self):
        self._typed_prefixes = {}
        super().full_clean()

    def clean(self):
        data = super().clean()
        system, organ = data.get("organ_system"), data.get("organ")
        if system and organ and organ not in frcp.organs_of(system):
            self.add_error(
                "organ",
                _(
                    "This organ (%(organ)s) is not one of the body system %(system)s:"
                    " choose one of its organs, or change the body system."
                )
                % {"organ": frcp.ORGANE.label(organ), "system": frcp.APPAREIL.label(system)},
            )
        # "pT2a" in the T field: the prefix goes to its own field, unless it contradicts it.
        chosen = data.get("tnm_prefix") or ""
        for name, prefix in self._typed_prefixes.items():
            if not prefix:
                continue
            if not chosen:
                chosen = data["tnm_prefix"] = prefix
            elif prefix != chosen:
                self.add_error(
                    name,
                    _("The prefix typed here (%(typed)s) is not the TNM prefix (%(chosen)s).")
                    % {"typed": prefix, "chosen": chosen},
                )
        return data


class PerinatalCaseForm(_RevisionForm):
    question = CaseForm.base_fields["question"]
    gestational_weeks = forms.IntegerField(
        label=_("Gestational age (weeks)"), min_value=0, max_value=45, required=False
    )
    gestational_days = forms.IntegerField(
        label=_("and days"), min_value=0, max_value=6, required=False
    )
    expected_term = forms.DateField(label=_("Expected term"), required=False, widget=DateInput())
    pregnancy_history = forms.CharField(
        label=_("Pregnancy history"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    fetal_findings = forms.CharField(
        label=_("Fetal findings"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    investigations = forms.CharField(
        label=_("Investigations"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    couple_wishes = forms.CharField(
        label=_("The couple's wishes"), widget=forms.Textarea(attrs={"rows": 2}), required=False
    )
    termination_attestation_requested = forms.BooleanField(
        label=_("An attestation for medical termination of pregnancy is requested"),
        required=False,
    )
    studies = CaseForm.base_fields["studies"]

    def __init__(self, *args, studies, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["studies"].queryset = studies


def case_form_class(case: Case):
    return PerinatalCaseForm if case.committee.is_cpdpn else CaseForm


class DecisionForm(forms.Form):
    revision = forms.IntegerField(widget=forms.HiddenInput, required=False)
    proposal = forms.CharField(
        label=_("Proposal"), widget=forms.Textarea(attrs={"rows": 4}), required=False
    )
    treatment_types = forms.MultipleChoiceField(
        label=_("Treatment types"),
        choices=frcp.TYPE_TRAITEMENT.choices(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    conforms_to_guideline = forms.NullBooleanField(
        label=_("Conforms to the regional guideline"),
        required=False,
        widget=forms.Select(choices=[("unknown", "—"), ("true", _("Yes")), ("false", _("No"))]),
    )
    non_conformity_reason = forms.CharField(
        label=_("If not, why"), widget=forms.Textarea(attrs={"rows": 2}), required=False
    )
    trial_proposed = forms.BooleanField(label=_("A clinical trial is proposed"), required=False)
    trial_name = forms.CharField(label=_("Trial"), required=False, max_length=200)
    trial_nct = forms.RegexField(
        label=_("NCT number"),
        regex=r"^NCT\d{8}$",
        required=False,
        max_length=11,
        error_messages={"invalid": _("An NCT number is NCT followed by 8 digits.")},
    )
    team_opinion = forms.CharField(
        label=_("The team's opinion"), widget=forms.Textarea(attrs={"rows": 4}), required=False
    )
    termination_attested = forms.NullBooleanField(
        label=_("Medical termination attested"),
        required=False,
        widget=forms.Select(choices=[("unknown", "—"), ("true", _("Yes")), ("false", _("No"))]),
    )

    CANCER_ONLY = (
        "proposal",
        "treatment_types",
        "conforms_to_guideline",
        "non_conformity_reason",
        "trial_proposed",
        "trial_name",
        "trial_nct",
    )
    CPDPN_ONLY = ("team_opinion", "termination_attested")

    def __init__(self, *args, cpdpn: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.CANCER_ONLY if cpdpn else self.CPDPN_ONLY:
            del self.fields[name]

    def clean(self):
        data = super().clean()
        if data.get("conforms_to_guideline") is False and not data.get("non_conformity_reason"):
            self.add_error(
                "non_conformity_reason", _("Say why the proposal departs from the guideline.")
            )
        if data.get("trial_proposed") and not (data.get("trial_name") or data.get("trial_nct")):
            self.add_error("trial_name", _("Name the trial or give its NCT number."))
        return data


class AgendaAddForm(forms.Form):
    session = forms.ModelChoiceField(label=_("Session"), queryset=Session.objects.none())

    def __init__(self, *args, sessions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["session"].queryset = sessions


class PostponeForm(AgendaAddForm):
    def __init__(self, *args, sessions, **kwargs):
        super().__init__(*args, sessions=sessions, **kwargs)
        self.fields["session"].required = False
        self.fields["session"].empty_label = _("No session yet: back to the waiting cases")


class ScheduleForm(forms.Form):
    first_start = forms.DateTimeField(label=_("First session"), widget=DateTimeLocalInput())
    duration_minutes = forms.IntegerField(
        label=_("Duration (minutes)"), min_value=15, max_value=600, initial=90
    )
    every = forms.ChoiceField(
        label=_("Recurrence"),
        choices=[
            ("once", _("Once")),
            ("weekly", _("Every week")),
            ("biweekly", _("Every other week")),
            ("monthly", _("Every month")),
        ],
    )
    count = forms.IntegerField(label=_("Number of sessions"), min_value=1, max_value=52, initial=1)
    deadline_days = forms.IntegerField(
        label=_("Case submission deadline (days before)"), min_value=0, max_value=30, initial=2
    )


class AttendanceForm(forms.Form):
    mode = forms.ChoiceField(
        label=_("I attend"),
        choices=[("in_person", _("In person")), ("remote", _("Remotely"))],
    )


class WrittenOpinionForm(forms.Form):
    text = forms.CharField(label=_("Written opinion"), widget=forms.Textarea(attrs={"rows": 3}))


SPECIALTY_LABELS = dict(Specialty.choices)


class CaseDocumentForm(forms.Form):
    kind = forms.ChoiceField(label=_("Kind"), choices=CaseDocument.Kind.choices)
    title = forms.CharField(label=_("Title"), max_length=200)
    file = forms.FileField(label=_("File (PDF, JPEG or PNG, 20 MB at most)"))


# --- Committees run by their coordinators (rcp.committees) ---------------------------------------


def _specialty_field(label):
    return forms.MultipleChoiceField(
        label=label,
        choices=Specialty.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_(
            "The quorum needs a physician of each of these specialties present (or a written "
            "opinion). A CPDPN always requires its four core specialties."
        ),
    )


class CommitteeCreateForm(forms.Form):
    """A new committee; its first coordinator is the person chosen in the directory."""

    step = forms.CharField(widget=forms.HiddenInput, initial="create")
    national_id = forms.CharField(widget=forms.HiddenInput, max_length=20)
    name = forms.CharField(label=_("Name"), max_length=200)
    kind = forms.ChoiceField(label=_("Kind"), choices=Committee.Kind.choices)
    establishment = forms.ModelChoiceField(
        label=_("Establishment"),
        queryset=Establishment.objects.order_by("name"),
        required=False,
        help_text=_("Leave empty for a territorial committee of several establishments."),
    )
    organ_system = forms.ChoiceField(
        label=_("Body system"),
        choices=EMPTY + frcp.APPAREIL.choices(),
        required=False,
        help_text=_("For an organ board."),
    )
    care_theme = forms.ChoiceField(
        label=_("Care theme"),
        choices=EMPTY + frcp.TRAITEMENT_SOINS.choices(),
        required=False,
        help_text=_("For a cross-cutting board."),
    )
    required_specialties = _specialty_field(_("Specialties the quorum requires"))
    place = forms.CharField(label=_("Usual place"), max_length=200, required=False)
    video_url = forms.URLField(label=_("Video link"), required=False, assume_scheme="https")


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=CommitteeMember.Role.choices)
    # The role the page showed: a change made meanwhile by another coordinator is not overridden.
    seen_role = forms.ChoiceField(choices=CommitteeMember.Role.choices, widget=forms.HiddenInput)


class RequiredSpecialtiesForm(forms.Form):
    specialties = _specialty_field(_("Specialties the quorum requires"))
    # The specialties the page showed, comma-separated (see MemberRoleForm.seen_role).
    seen = forms.CharField(widget=forms.HiddenInput, required=False)

    def seen_list(self) -> list[str]:
        return [code for code in self.cleaned_data["seen"].split(",") if code]
