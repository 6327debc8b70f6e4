"""The patient page's tele-expertise panel: the patient's requests that the reader may open.

Asked by ``portal.selectors.patient_panels`` through ``ExpertiseConfig.patient_panel`` (portal
cannot import this app). One query whatever the number of requests.
"""

from expertise.selectors import requests_visible_to
from portal.selectors import PatientPanel

REQUESTS_SHOWN = 50


def patient_panel(*, user, patient) -> PatientPanel:
    # requests_visible_to is the filter of the request's access helper: each one listed opens.
    requests = (
        requests_visible_to(user)
        .filter(patient=patient)
        .select_related("pool")
        .order_by("-created_at")[:REQUESTS_SHOWN]
    )
    return PatientPanel(
        order=20,
        template="expertise/_patient_requests.html",
        context={"expertise_requests": list(requests)},
    )
