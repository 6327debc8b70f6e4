"""The remote radiologist's day, in Chromium against the seeded demo, at the pilot's two
screen sizes.

j.moreau (teleradiology pool of CHRU de Tours) opens the pool's queue (overdue requests
first), accepts a request (and is told so), opens the patient's imaging dossier, where a
prior CT made at another establishment (the Clinique des Bords de Loire, Blois) shows beside
the requester's, opens the prior in the viewer (every breadcrumb and link leads somewhere),
writes the report, signs it with the password on the confirmation step, and sees the page
answer and the PDF's progress reach "ready".

Each size takes its own demo request (the first of the queue by deadline for the laptop, the
latest arrived for the tablet), so the two runs do not depend on each other.
"""

import re

import pytest

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import DEMO_PASSWORD, browser, demo_server  # noqa: F401
from tests.test_rcp_browser import _shell

pytestmark = pytest.mark.service("chromium")

EXPERT = "j.moreau@mirc.test"
PRIOR_PLACE = "Clinique des Bords de Loire"
CONCLUSION = "Pas de lésion évolutive par rapport au scanner antérieur."

# Which unclaimed teleradiology request each size takes: the earliest deadline (the overdue
# one) for the laptop, the latest sent for the tablet.
PICK = {"1366x768": "due_at", "tablet": "-sent_at"}


def _request_with_a_prior(manage, order: str) -> tuple[int, int]:
    """An unclaimed teleradiology request of the demo and its patient, who is given a prior CT
    from another establishment (the Clinique des Bords de Loire) a year before."""
    request_id, patient_id = _shell(
        manage,
        "from expertise.models import Request as R;"
        "r = R.objects.filter(state='sent', expert__isnull=True,"
        " pool__name__startswith='Téléradiologie').exclude(patient__studies__establishment__finess="
        f"'410009990').order_by('{order}').first();"
        "print(r.pk, r.patient_id)",
    ).split()
    _shell(
        manage,
        "import datetime as dt;"
        "from demo.expertise import BLOIS, _ct; from portal.models import Patient;"
        f"p = Patient.objects.get(pk={patient_id});"
        "s = _ct(p, finess=BLOIS, day=dt.date.today() - dt.timedelta(days=365),"
        " description='TDM thoracique (antérieur)');"
        "print(s.pk)",
    )
    return int(request_id), int(patient_id)


def _internal_links(walk) -> set[str]:
    hrefs = walk.page.locator("main a[href^='/'], .crumbs a[href^='/']").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    return {href.split("#")[0] for href in hrefs if not href.startswith("/static/")}


def _assert_links_lead_somewhere(walk) -> None:
    for href in sorted(_internal_links(walk)):
        status = walk.page.request.get(f"{walk.base}{href}").status
        assert status not in (403, 404), f"{walk.page.url}: the link {href} answers {status}"


def _messages(walk) -> str:
    return walk.page.locator("ul.messages").inner_text()


@pytest.mark.parametrize("size", list(SIZES))
def test_the_remote_radiologist_answers_a_request(demo_server, browser, size):  # noqa: F811
    base, manage = demo_server
    request_id, patient_id = _request_with_a_prior(manage, PICK[size])
    walk = open_as(browser, base, EXPERT, role="radiologist", size=size)
    page = walk.page
    try:
        # --- The queue: overdue requests first ---
        walk.goto("/teleexpertise/")
        queue = page.locator("[data-testid=queue] [data-testid=request-row]")
        assert queue.count() >= 1
        overdue = [row.locator("[data-testid=overdue]").count() > 0 for row in queue.all()]
        assert overdue == sorted(overdue, reverse=True), "an overdue request waits behind"
        walk.shot("queue")
        walk.assert_fits_width("the queue")

        # --- Accept the request: a message says it is the expert's now ---
        page.click(f"[data-testid=queue] [data-request='{request_id}'] a")
        page.click("[data-testid=claim-request]")
        assert "Vous avez accepté la demande" in _messages(walk)
        assert page.locator("[data-testid=request-state]").inner_text() == "Acceptée"
        walk.shot("claimed")
        walk.assert_fits_width("the request")
        _assert_links_lead_somewhere(walk)

        # --- The patient's imaging dossier: the priors of other establishments ---
        page.click("[data-testid=patient-dossier]")
        page.wait_for_url(f"{base}/patients/{patient_id}/imagerie/")
        studies = page.locator("li.study")
        assert studies.count() >= 2
        assert PRIOR_PLACE in page.locator("ul.studies").inner_text()
        assert page.locator("[data-testid=read-only]").count() == 1
        assert page.locator("input[name=files]").count() == 0  # no import: read only
        walk.shot("dossier")
        walk.assert_fits_width("the dossier")
        _assert_links_lead_somewhere(walk)

        # --- The prior in the viewer; the breadcrumbs lead where the expert may go ---
        prior = studies.filter(has_text=PRIOR_PLACE).first
        prior.get_by_role("link", name="Ouvrir dans la visionneuse").click()
        page.wait_for_url(re.compile(r".*/visionneuse/$"))
        page.locator("[data-mirc-viewer]").wait_for(timeout=20_000)
        crumbs = page.locator("[data-testid=crumbs] a")
        assert crumbs.count() >= 2  # the patients' list and the dossier (not the record)
        walk.shot("viewer")
        walk.assert_fits_width("the viewer")
        _assert_links_lead_somewhere(walk)

        # --- The report, saved, then signed with the password ---
        walk.goto(f"/teleexpertise/demandes/{request_id}/")
        page.fill("textarea[name=findings]", "Comparaison avec le scanner antérieur de Blois.")
        page.fill("textarea[name=conclusion]", CONCLUSION)
        page.click("[data-testid=save-report]")
        assert "Compte rendu enregistré" in _messages(walk)
        page.click("[data-testid=sign-report]")
        summary = page.locator("[data-testid=sign-summary]")
        assert CONCLUSION in summary.inner_text()
        assert "TE2" in page.locator("[data-testid=sign-acts]").inner_text()
        walk.shot("sign-confirm")
        walk.assert_fits_width("the signature step")
        page.fill("[data-testid=sign-form] input[name=password]", DEMO_PASSWORD)
        page.click("[data-testid=confirm-sign]")
        assert page.locator("[data-testid=request-state]").inner_text() == "Répondue"
        assert "Compte rendu signé" in _messages(walk)
        walk.shot("signed")

        # --- The PDF's progress, polled by the page, reaches "ready" ---
        page.locator("[data-testid=report-pdf-download]").wait_for(timeout=60_000)
        assert "Prêt" in page.locator("[data-testid=report-outputs]").inner_text()
        walk.shot("pdf-ready")
        walk.assert_fits_width("the answered request")
        assert not walk.errors, walk.errors
    finally:
        walk.close()
