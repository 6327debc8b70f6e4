"""The filters of the indicators page and of the billing records export."""

import datetime as dt

from django import forms
from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from expertise.billing import previous_month
from portal.forms import DateInput
from portal.models import Establishment, Specialty
from portal.periods import Period, default_period

EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2100, 12, 31)


class PeriodForm(forms.Form):
    """From and to, both included; a date left out is the default period's."""

    start = forms.DateField(label=gettext_lazy("From"), required=False, widget=DateInput())
    end = forms.DateField(label=gettext_lazy("To"), required=False, widget=DateInput())

    def default_period(self) -> Period:
        return default_period()

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        default = self.default_period()
        start = data.get("start") or default.start
        end = data.get("end") or default.end
        for name, value in (("start", start), ("end", end)):
            if not EARLIEST <= value <= LATEST:
                self.add_error(
                    name,
                    _("Choose a date between %(first)s and %(last)s.")
                    % {
                        "first": formats.date_format(EARLIEST, "SHORT_DATE_FORMAT"),
                        "last": formats.date_format(LATEST, "SHORT_DATE_FORMAT"),
                    },
                )
        if not self.errors and start > end:
            raise forms.ValidationError(_("The start of the period must be on or before its end."))
        data["period"] = Period(start=start, end=end)
        return data


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

    def default_period(self) -> Period:
        return previous_month()
