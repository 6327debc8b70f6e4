"""How the audit trail names the imaging studies (registered in portal.audit_labels)."""

from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from imaging.models import Share, Study
from portal.audit_labels import integer_ids, patient_short_name, register

# The names French clinicians give the DICOM modalities (PS3.3 C.7.3.1.1.1).
MODALITY_NAMES = {
    "CT": gettext_lazy("CT"),
    "MR": gettext_lazy("MRI"),
    "PT": gettext_lazy("PET"),
    "NM": gettext_lazy("nuclear medicine"),
    "US": gettext_lazy("ultrasound"),
    "CR": gettext_lazy("X-ray"),
    "DX": gettext_lazy("X-ray"),
    "MG": gettext_lazy("mammography"),
    "XA": gettext_lazy("angiography"),
}


def _modality(modalities: str) -> str:
    codes = [code for code in modalities.replace("\\", " ").replace(",", " ").split() if code]
    for code in codes:
        if code in MODALITY_NAMES:
            return str(MODALITY_NAMES[code])
    return codes[0] if codes else ""


def _studies(ids: list[str]) -> dict[str, str]:
    labels = {}
    for study in Study.objects.filter(pk__in=integer_ids(ids)).select_related("patient"):
        values = {
            "modality": _modality(study.modalities),
            "date": formats.date_format(study.study_date, "SHORT_DATE_FORMAT")
            if study.study_date
            else "?",
            "patient": patient_short_name(study.patient) if study.patient else "—",
        }
        labels[str(study.pk)] = _("%(modality)s study of %(date)s — %(patient)s") % values
    return labels


def _shares(ids: list[str]) -> dict[str, str]:
    """A share (imaging.shares) by its recipient, as the author gave him, and its patient."""
    return {
        str(share.pk): _("Share with %(recipient)s — %(patient)s")
        % {"recipient": share.recipient_name, "patient": patient_short_name(share.patient)}
        for share in Share.objects.filter(pk__in=integer_ids(ids)).select_related("patient")
    }


def register_labels() -> None:
    register("imaging.study", _studies)
    register("imaging.share", _shares)
