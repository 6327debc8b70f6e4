"""The data protection officer of the demo (n.simon) answers a patient who asks who looked at
their record: from the audit trail, she opens the patient's events, and prints the access
letter (PDF, French) on the letterhead of the patient's establishment, in Chromium against the
seeded demo.
"""

import io
import re

import pytest
from pypdf import PdfReader

from tests.test_demo_browser import (  # noqa: F401
    ARTIFACTS,
    _sign_in,
    browser,
    demo_server,
)

pytestmark = pytest.mark.service("chromium")


def test_the_dpo_prints_a_patients_access_letter(demo_server, browser):  # noqa: F811
    base, _manage = demo_server
    context = browser.new_context(locale="fr-FR", accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    _sign_in(page, base, "n.simon@mirc.test")
    page.wait_for_url(f"{base}/")

    page.goto(f"{base}/audit/")
    # A patient of the trail: the demo's seeding wrote events against every patient.
    link = page.locator("[data-testid=events] tbody td a[href*='patient=']").first
    patient_name = link.inner_text()
    link.click()
    form = page.locator("[data-testid=access-letter]")
    form.wait_for(timeout=10_000)
    letterhead = form.locator("select[name=establishment] option:checked").inner_text()
    assert letterhead and letterhead != "Le portail régional"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "access-letter-form.png"), full_page=True)

    with page.expect_download(timeout=30_000) as download_info:
        form.locator("button[type=submit]").click()
    download = download_info.value
    assert re.fullmatch(r"releve-des-acces-\d{8}\.pdf", download.suggested_filename)
    reader = PdfReader(io.BytesIO(open(download.path(), "rb").read()))  # noqa: PTH123, SIM115
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() or "" for p in reader.pages))
    assert "Relevé des accès à votre dossier" in text
    assert letterhead in text
    assert patient_name in text
    assert "Page 1 / " in text
    assert "accès, par" in text

    # The export is in the trail, against the patient.
    page.goto(f"{base}/audit/?event_id=110106")
    assert "Export" in page.locator("[data-testid=events]").inner_text()
    assert not errors, errors
    context.close()
