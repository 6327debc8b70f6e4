"""The filters of the indicators page and of the billing records export."""

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from expertise.billing import previous_month
from portal.indicators import PeriodForm
from portal.models import Establishment, Specialty
from portal.periods import Period


class IndicatorFilterForm(PeriodForm):
    """Period, specialty and pool, among the pools the user may see."""

    specialty = forms.ChoiceField(label=gettext_lazy("Specialty"), required=False)
    pool = forms.ModelChoiceField(
        label=gettext_lazy("Pool"),
        queryset=None,
        required=False,
        empty_label=gettext_lazy("All pools"),
    )

    def __init__(self, *args, pools, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["pool"].queryset = pools.order_by("specialty", "name")
        offered = set(pools.values_list("specialty", flat=True))
        self.fields["specialty"].choices = [("", _("All specialties"))] + [
            (code, label) for code, label in Specialty.choices if code in offered
        ]


class ActsForm(PeriodForm):
    """An establishment the user is affiliated with, and a period (the previous month by
    default: the billing office bills month by month)."""

    establishment = forms.ModelChoiceField(
        label=gettext_lazy("Establishment"), queryset=Establishment.objects.none(), empty_label=None
    )

    def __init__(self, *args, establishments, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["establishment"].queryset = establishments

    @classmethod
    def default_period(cls) -> Period:
        return previous_month()
