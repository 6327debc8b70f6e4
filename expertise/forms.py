import datetime as dt

from django import forms
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _

from expertise.models import (
    EXPECTED_DELAY,
    Attachment,
    ConsentMethod,
    Pool,
    PoolMember,
    Report,
    Request,
    Urgency,
)
from expertise.services import DeclineTo, requirement_label
from portal.forms import DateInput
from portal.models import Establishment, Specialty, User

EMPTY = [("", "—")]


def _hours(delay) -> int:
    return int(delay.total_seconds() // 3600)


def urgency_choices():
    labels = {
        Urgency.URGENT: _("Urgent — answer expected within %(hours)d hours"),
        Urgency.PRIORITY: _("Priority — answer expected within %(days)d days"),
        Urgency.ROUTINE: _("Routine — answer expected within %(days)d days"),
    }
    return [
        (
            level,
            labels[level]
            % {"hours": _hours(EXPECTED_DELAY[level]), "days": EXPECTED_DELAY[level].days},
        )
        for level in Urgency.values
    ]


class PoolChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, pool):
        need = requirement_label(pool.specialty)
        values = {"specialty": pool.get_specialty_display(), "pool": pool.name, "need": need}
        if need:
            return _("%(specialty)s · %(pool)s (needs %(need)s)") % values
        return _("%(specialty)s · %(pool)s") % values


class ExpertChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, user):
        return str(getattr(user, "professional", None) or user)


class RequestForm(forms.Form):
    """The request: where it goes, the question, the files, the patient's consent."""

    pool = PoolChoiceField(
        label=_("Specialty and pool"),
        queryset=Pool.objects.none(),
        help_text=_("The pool's experts share its queue; the first available one answers."),
    )
    expert = ExpertChoiceField(
        label=_("Named expert (optional)"),
        queryset=User.objects.none(),
        required=False,
        help_text=_("Only this expert of the pool will see the request until they decline it."),
    )
    # The standard delay unless the requester says otherwise: with "urgent" as the first
    # option, every request left as it came was urgent, and jumped the queue.
    urgency = forms.ChoiceField(
        label=_("Urgency"),
        choices=urgency_choices,
        initial=Request._meta.get_field("urgency").default,
    )
    question = forms.CharField(
        label=_("Question to the expert"), widget=forms.Textarea(attrs={"rows": 3})
    )
    clinical_context = forms.CharField(
        label=_("Clinical context"),
        widget=forms.Textarea(attrs={"rows": 5}),
        required=False,
        help_text=_("History, treatments, what was already done, what you expect."),
    )
    studies = forms.ModelMultipleChoiceField(
        label=_("Imaging studies from the patient's dossier"),
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    patient_informed = forms.BooleanField(
        label=_("The patient was informed of the tele-expertise and consents to it"),
        required=False,
    )
    consent_date = forms.DateField(
        label=_("Date of consent"),
        required=False,
        widget=DateInput(),
    )
    consent_method = forms.ChoiceField(
        label=_("How consent was obtained"), choices=EMPTY + ConsentMethod.choices, required=False
    )

    def __init__(self, *args, studies, **kwargs):
        super().__init__(*args, **kwargs)
        from expertise.selectors import pools_for_request_form

        self.fields["pool"].queryset = pools_for_request_form()
        self._offer_experts_of(self._chosen_pool())
        self.fields["studies"].queryset = studies
        self.fields["studies"].label_from_instance = lambda study: " · ".join(
            part
            for part in (
                formats.date_format(study.study_date, "SHORT_DATE_FORMAT")
                if study.study_date
                else "",
                study.modalities,
                study.description,
                study.institution_name,
            )
            if part
        )

    def _chosen_pool(self) -> Pool | None:
        """The pool the form was posted (or opened) with, if it is one of the choices."""
        value = self.data.get(self.add_prefix("pool")) if self.is_bound else None
        value = value or self.initial.get("pool")
        value = getattr(value, "pk", value)
        if not value:
            return None
        try:
            return self.fields["pool"].queryset.filter(pk=value).first()
        except (TypeError, ValueError):
            return None

    def _offer_experts_of(self, pool: Pool | None) -> None:
        """Only the experts of ``pool`` once it is known (an expert of another specialty was
        offered, then refused); before that, each pool's experts under its name.

        The field still accepts any expert of an active pool, so that one posted for the
        wrong pool gets :meth:`clean`'s message rather than "not one of the choices"."""
        experts = PoolMember.objects.filter(
            role=PoolMember.Role.EXPERT, pool__is_active=True, professional__user__is_active=True
        )
        field = self.fields["expert"]
        field.queryset = (
            User.objects.filter(pk__in=experts.values("professional__user"))
            .select_related("professional")
            .order_by("last_name", "first_name")
        )
        if pool is not None:
            experts = experts.filter(pool=pool)
        optgroups: dict[str, list] = {}
        for member in experts.select_related("pool", "professional__user").order_by(
            "pool__specialty", "pool__name", "professional__user__last_name"
        ):
            group = _("%(specialty)s · %(pool)s") % {
                "specialty": member.pool.get_specialty_display(),
                "pool": member.pool.name,
            }
            optgroups.setdefault(group, []).append(
                (member.professional.user_id, str(member.professional))
            )
        if pool is not None:
            offered = [choice for choices in optgroups.values() for choice in choices]
        else:
            offered = list(optgroups.items())
        field.widget.choices = [("", field.empty_label), *offered]

    def clean_consent_date(self):
        value = self.cleaned_data.get("consent_date")
        if value and value > timezone.localdate():
            raise forms.ValidationError(_("The consent date cannot be in the future."))
        return value

    def clean(self):
        data = super().clean()
        pool, expert = data.get("pool"), data.get("expert")
        if pool and expert:
            is_member = PoolMember.objects.filter(
                pool=pool, professional__user=expert, role=PoolMember.Role.EXPERT
            ).exists()
            if not is_member:
                self.add_error("expert", _("This expert does not answer for the chosen pool."))
        return data


class RequestEditForm(RequestForm):
    revision = forms.IntegerField(widget=forms.HiddenInput)


class AttachmentForm(forms.Form):
    kind = forms.ChoiceField(label=_("Kind"), choices=Attachment.Kind.choices)
    title = forms.CharField(label=_("Title"), max_length=200, required=False)
    file = forms.FileField(
        label=_("File"), help_text=_("PDF, JPEG or PNG, 20 MB at most. Photos: JPEG or PNG.")
    )

    def __init__(self, *args, optional: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        # On the request form the file is optional: the browser must not ask for one.
        if optional:
            self.fields["file"].required = False


class MessageForm(forms.Form):
    body = forms.CharField(
        label=_("Message"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    file = forms.FileField(label=_("Attach a file (optional)"), required=False)
    kind = forms.ChoiceField(
        label=_("The file is"),
        choices=Attachment.Kind.choices,
        initial=Attachment.Kind.DOCUMENT,
        required=False,
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 2}))


class DeclineForm(ReasonForm):
    to = forms.ChoiceField(
        label=_("The request goes"),
        choices=[
            (DeclineTo.POOL, _("back to the pool, for another expert")),
            (DeclineTo.REQUESTER, _("back to the requester")),
        ],
        widget=forms.RadioSelect,
        initial=DeclineTo.POOL,
    )


class QuestionForm(forms.Form):
    question = forms.CharField(
        label=_("Your question to the requester"), widget=forms.Textarea(attrs={"rows": 3})
    )


class CloseForm(forms.Form):
    outcome = forms.ChoiceField(
        label=_("Did this tele-expertise avoid a referral or an exam?"),
        # The answer of before the exam/transfer split is not offered any more.
        choices=[(value, Request.Outcome(value).label) for value in Request.OFFERED_OUTCOMES],
        widget=forms.RadioSelect,
    )


class ReportForm(forms.ModelForm):
    revision = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Report
        fields = [
            "findings",
            "conclusion",
            "recommendation",
            "needs_consultation",
            "needs_exam",
            "exam_detail",
        ]
        widgets = {
            "findings": forms.Textarea(attrs={"rows": 5}),
            "conclusion": forms.Textarea(attrs={"rows": 3}),
            "recommendation": forms.Textarea(attrs={"rows": 3}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A draft may be saved incomplete; signing checks completeness.
        self.fields["findings"].required = False
        self.fields["conclusion"].required = False


class ReviewForm(forms.Form):
    study = forms.ModelChoiceField(label=_("Study"), queryset=None, empty_label=None)

    def __init__(self, *args, studies, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["study"].queryset = studies


class SignatureForm(forms.Form):
    """The confirmation step of signing: the password (and the second factor's code when the
    account has one) stands for the signature."""

    revision = forms.IntegerField(widget=forms.HiddenInput)
    password = forms.CharField(
        label=_("Your password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    code = forms.CharField(
        label=_("The code of your authenticator app"),
        required=False,
        max_length=12,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "size": 8}
        ),
    )

    def __init__(self, *args, needs_code: bool, needs_password: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not needs_password:  # an SSO account signs with its second factor
            del self.fields["password"]
        if needs_code:
            self.fields["code"].required = True
        else:
            del self.fields["code"]


# --- Pools run by their coordinators (expertise.pools) --------------------------------------------


class PoolCreateForm(forms.Form):
    """A new pool; its first coordinator is the person chosen in the directory."""

    step = forms.CharField(widget=forms.HiddenInput, initial="create")
    national_id = forms.CharField(widget=forms.HiddenInput, max_length=20)
    name = forms.CharField(label=_("Name"), max_length=200)
    specialty = forms.ChoiceField(label=_("Specialty"), choices=Specialty.choices)
    establishment = forms.ModelChoiceField(
        label=_("Establishment"), queryset=Establishment.objects.order_by("name")
    )


class PoolMemberRoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=PoolMember.Role.choices)
    # The role the page showed: a change made meanwhile by another coordinator is not overridden.
    seen_role = forms.ChoiceField(choices=PoolMember.Role.choices, widget=forms.HiddenInput)


class PoolSettingsForm(forms.Form):
    """Whether the pool takes new requests, and the answer it commits to per urgency."""

    is_active = forms.BooleanField(label=_("Accepting new requests"), required=False)
    urgent_hours = forms.IntegerField(
        label=_("Urgent: answer within (hours)"), min_value=1, max_value=72
    )
    priority_days = forms.IntegerField(
        label=_("Priority: answer within (days)"), min_value=1, max_value=30
    )
    routine_days = forms.IntegerField(
        label=_("Routine: answer within (days)"), min_value=1, max_value=30
    )
    revision = forms.IntegerField(widget=forms.HiddenInput)

    @classmethod
    def for_pool(cls, pool: Pool) -> "PoolSettingsForm":
        return cls(
            initial={
                "is_active": pool.is_active,
                "urgent_hours": _hours(pool.urgent_delay),
                "priority_days": pool.priority_delay.days,
                "routine_days": pool.routine_delay.days,
                "revision": pool.revision,
            }
        )

    def delays(self) -> dict:
        data = self.cleaned_data
        return {
            "urgent_delay": dt.timedelta(hours=data["urgent_hours"]),
            "priority_delay": dt.timedelta(days=data["priority_days"]),
            "routine_delay": dt.timedelta(days=data["routine_days"]),
        }
