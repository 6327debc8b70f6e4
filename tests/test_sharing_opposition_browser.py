"""The patient's say, in Chromium against the seeded demo.

* Dr Claire Martin (c.martin, CHRU de Tours) records a patient's opposition to sharing between
  establishments from the patient page, sees it with its source and date, and lifts it.
* The data protection officer (n.simon) answers a patient who asks who looked at their record:
  from the audit trail she opens the patient's events and prints the access letter (PDF, in
  French) on the letterhead of the patient's establishment.
"""

import datetime as dt
import io
import re
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from tests.test_demo_browser import (  # noqa: F401
    ARTIFACTS,
    _sign_in,
    browser,
    demo_server,
)

pytestmark = pytest.mark.service("chromium")

PARIS = ZoneInfo("Europe/Paris")
ACCEPTS = "Accepte le partage entre les établissements qui le prennent en charge."


def test_a_doctor_records_and_lifts_a_patients_opposition(demo_server, browser):  # noqa: F811
    base, _manage = demo_server
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    _sign_in(page, base, "c.martin@mirc.test")
    page.wait_for_url(f"{base}/")

    # Her first patient whose record the CHRU de Tours holds (an IPP there): she may take
    # the patient's word on sharing.
    page.goto(f"{base}/patients/")
    links = [
        a.get_attribute("href") for a in page.locator("table tbody tr a[href^='/patients/']").all()
    ]
    button = page.locator("[data-testid=sharing-opposition]")
    for href in links:
        page.goto(f"{base}{href}")
        if button.count():
            break
    else:
        pytest.fail("no patient of Dr Martin offers the opposition to sharing")
    patient_page = page.url
    state = page.locator("[data-testid=sharing-state]")
    assert state.inner_text() == ACCEPTS

    button.click()
    consequence = page.locator("[data-testid=sharing-opposition-consequence]")
    assert "chaque établissement ne verra que les examens qu'il a lui-même réalisés" in (
        consequence.inner_text()
    )
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(patient_page)
    today = dt.datetime.now(tz=PARIS).strftime("%d/%m/%Y")
    assert state.inner_text() == (f"S'oppose au partage entre établissements depuis le {today}.")
    source = page.locator("[data-testid=sharing-source]").inner_text()
    assert source.startswith(f"Enregistrée le {today}")
    assert "dans le portail par Dr Claire Martin, CHRU de Tours (FINESS 370000481)." in source
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sharing-opposition-recorded.png"), full_page=True)

    # Lifted the same way, with a confirmation.
    assert button.inner_text() == "Lever l'opposition…"
    button.click()
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(patient_page)
    assert state.inner_text() == ACCEPTS
    assert page.locator("[data-testid=sharing-source]").count() == 0
    assert not errors, errors
    context.close()


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
