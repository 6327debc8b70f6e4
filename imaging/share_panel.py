"""The patient page's panel of shares (imaging.shares), asked by
``portal.selectors.patient_panels`` through ``ImagingConfig.patient_panel``.

Four queries whatever the number of shares: the shares with their author, their studies,
their documents, and whether the reader is the patient's referring doctor."""

from django.utils.translation import gettext as _

from imaging.permissions import may_share
from imaging.shares import shares_of_patient
from portal.permissions import is_referring_doctor
from portal.selectors import AUDITOR_PERMISSION, PatientPanel

SHARES_SHOWN = 50


def _state(share) -> tuple[str, str]:
    if share.is_revoked:
        return "revoked", _("Revoked")
    if share.is_expired:
        return "expired", _("Expired")
    if share.is_suspended:
        return "suspended", _("Suspended (opposition to sharing)")
    return "active", _("Active")


def patient_panel(*, user, patient) -> PatientPanel:
    shares = list(shares_of_patient(patient)[:SHARES_SHOWN])
    revokes_all = bool(shares) and (
        is_referring_doctor(user=user, patient=patient) or user.has_perm(AUDITOR_PERMISSION)
    )
    rows = []
    for share in shares:
        state, label = _state(share)
        rows.append(
            {
                "share": share,
                "state": state,
                "state_label": label,
                "may_revoke": state in ("active", "suspended")
                and (revokes_all or share.author_id == user.pk),
            }
        )
    return PatientPanel(
        order=30,
        template="imaging/shares/_patient_shares.html",
        context={"shares": rows, "may_share": may_share(user, patient), "patient_id": patient.pk},
    )
