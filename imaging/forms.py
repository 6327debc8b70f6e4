from django import forms
from django.utils.translation import gettext_lazy as _

from portal.models import CareRelationship, Professional


class ReviewRoomForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200)
    members = forms.ModelMultipleChoiceField(
        label=_("Invite"),
        queryset=Professional.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Only the patient's care team can join: the room shows the patient's images."),
    )

    def __init__(self, *args, study, user, **kwargs):
        super().__init__(*args, **kwargs)
        team = CareRelationship.objects.filter(patient=study.patient, ended_at__isnull=True).values(
            "professional_id"
        )
        self.fields["members"].queryset = (
            Professional.objects.filter(pk__in=team, user__is_active=True)
            .exclude(user=user)
            .select_related("user")
            .order_by("user__last_name", "user__first_name")
        )
        if not self.is_bound:
            label = study.study_date.strftime("%d/%m/%Y") if study.study_date else ""
            self.fields["title"].initial = _("Image review: %(study)s") % {
                "study": " ".join(filter(None, [study.modalities, label]))
            }
