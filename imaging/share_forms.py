"""Forms of the shares (imaging.shares): the author's, and the recipient's code."""

from django import forms
from django.utils.translation import gettext_lazy as _

from imaging.shares import DEFAULT_DAYS, MAX_DAYS


class ShareForm(forms.Form):
    studies = forms.ModelMultipleChoiceField(
        label=_("Studies"),
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("The recipient sees these studies in the viewer, and nothing else."),
    )
    documents = forms.MultipleChoiceField(
        label=_("Documents"), choices=(), required=False, widget=forms.CheckboxSelectMultiple
    )
    recipient_name = forms.CharField(label=_("Recipient (name)"), max_length=200)
    recipient_email = forms.EmailField(
        label=_("Recipient's e-mail"),
        help_text=_("The link and the one-time code are sent to this address."),
    )
    recipient_rpps = forms.RegexField(
        label=_("Recipient's RPPS"),
        regex=r"^\d{11}$",
        required=False,
        error_messages={"invalid": _("An RPPS number has 11 digits.")},
        help_text=_("If known: a Pro Santé Connect sign-in with it skips the code."),
    )
    days = forms.IntegerField(
        label=_("Available for (days)"), min_value=1, max_value=MAX_DAYS, initial=DEFAULT_DAYS
    )
    allow_download = forms.BooleanField(
        label=_("Allow downloading the images (DICOMDIR)"),
        required=False,
        help_text=_(
            "The recipient may then take the shared studies away as a zip, as on a CD of "
            "images; otherwise he only views them."
        ),
    )
    note = forms.CharField(
        label=_("Note to the recipient"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def __init__(self, *args, studies, documents, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["studies"].queryset = studies
        self.fields["studies"].label_from_instance = lambda study: " · ".join(
            part
            for part in (
                study.study_date.strftime("%d/%m/%Y") if study.study_date else "",
                study.modalities,
                study.description,
            )
            if part
        )
        self.documents_offered = {item.key: item for item in documents}
        self.fields["documents"].choices = [(item.key, item.label) for item in documents]

    def clean(self):
        data = super().clean()
        if not data.get("studies") and not data.get("documents") and not self.errors:
            raise forms.ValidationError(_("Choose at least one study or document to share."))
        return data

    def chosen_documents(self):
        return [self.documents_offered[key] for key in self.cleaned_data["documents"]]


class ShareCodeForm(forms.Form):
    code = forms.RegexField(
        label=_("Code received by e-mail"),
        regex=r"^\s*\d{6}\s*$",
        error_messages={"invalid": _("The code has 6 digits.")},
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "maxlength": "8"}
        ),
    )


class ShareRevokeForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), required=False, max_length=300)
