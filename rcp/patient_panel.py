"""The patient page's RCP panel: the patient's cases that the reader may open.

Asked by ``portal.selectors.patient_panels`` through ``RcpConfig.patient_panel`` (portal cannot
import this app). Two queries whatever the number of cases.
"""

from django.db.models import Prefetch

from portal.selectors import PatientPanel
from rcp.models import Decision
from rcp.selectors import cases_visible_to
from rcp.status import case_status_details

# A patient's cases over the years stay well under this; the page is not a full history.
CASES_SHOWN = 50


def patient_panel(*, user, patient) -> PatientPanel:
    cases = (
        cases_visible_to(user)
        .filter(patient=patient)
        .select_related("committee", "session", "submitted_by__professional")
        .prefetch_related(
            Prefetch(
                "decisions",
                queryset=Decision.objects.filter(validated_at__isnull=False)
                .select_related("validated_by__professional")
                .order_by("version"),
                to_attr="validated_decisions",
            )
        )
        .order_by("-created_at")[:CASES_SHOWN]
    )
    rows = [
        {
            "case": case,
            # Every case listed comes from cases_visible_to, the filter of the case's access
            # helper: the reader may open each one.
            "details": case_status_details(
                case,
                validated_decision=case.validated_decisions[-1]
                if case.validated_decisions
                else None,
            ),
        }
        for case in cases
    ]
    return PatientPanel(
        order=10,
        template="rcp/_patient_cases.html",
        context={"rcp_cases": rows},
    )
