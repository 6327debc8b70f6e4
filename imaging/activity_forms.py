"""The filters of the programme's imaging indicators page (imaging.activity_views)."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy

from portal.indicators import PeriodForm

GROUPINGS = (
    ("month", gettext_lazy("Month")),
    ("quarter", gettext_lazy("Quarter")),
    ("year", gettext_lazy("Year")),
    ("period", gettext_lazy("Whole period")),
)


class ActivityFilterForm(PeriodForm):
    """Period, how it is cut (month, quarter, year), one establishment among the user's, one
    modality among those the figures know."""

    group = forms.ChoiceField(
        label=gettext_lazy("Per"), choices=GROUPINGS, required=False, initial="month"
    )
    establishment = forms.ModelChoiceField(
        label=gettext_lazy("Establishment"),
        queryset=None,
        required=False,
        empty_label=gettext_lazy("All my establishments"),
    )
    modality = forms.ChoiceField(label=gettext_lazy("Modality"), required=False)

    def __init__(self, *args, establishments, modalities, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["establishment"].queryset = establishments
        self.fields["modality"].choices = [("", gettext_lazy("All modalities"))] + [
            (code, code) for code in modalities
        ]

    def clean(self):
        data = super().clean()
        data["group"] = data.get("group") or "month"
        return data
