"""A teleradiology request as the demo users live it, in Chromium against the seeded demo.

A GP at a practice (p.lemoine) sends his patient's chest CT to the teleradiology pool of
CHRU de Tours; a radiologist of the pool (j.moreau) claims it, asks one question, gets the
answer, reviews the CT live with the GP, then signs the report. The PDF reaches the GP, who
closes the request; the billing office sees the acts and the regional programme the
indicators.
"""

import datetime as dt
import io
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from tests.test_demo_browser import (  # noqa: F401
    ARTIFACTS,
    DEMO_PASSWORD,
    browser,
    demo_server,
)
from tests.test_rcp_browser import _page, _shell, _wait

pytestmark = pytest.mark.service("chromium")

POOL = "Téléradiologie — CHRU de Tours"
PARIS = ZoneInfo("Europe/Paris")
QUESTION = "Nodule pulmonaire de 8 mm au scanner : surveillance ou avis spécialisé ?"


def test_a_gp_asks_teleradiology_and_gets_a_signed_report(demo_server, browser):  # noqa: F811
    base, manage = demo_server
    patient_id, patient_name = _shell(
        manage,
        "from demo.expertise import live_story_patient; p = live_story_patient();"
        "print(p.pk, p.birth_name.upper())",
    ).split()
    gp_context, gp, errors = _page(browser, base, "p.lemoine@mirc.test")
    ARTIFACTS.mkdir(exist_ok=True)

    # --- The GP writes the request from the patient's record, with the CT and the consent ---
    gp.goto(f"{base}/patients/{patient_id}/")
    gp.click("[data-testid=ask-expertise]")
    gp.select_option(
        "select[name=pool]",
        label=gp.locator("select[name=pool] option", has_text=POOL).inner_text(),
    )
    gp.select_option("select[name=urgency]", "priority")
    gp.fill("textarea[name=question]", QUESTION)
    gp.fill(
        "textarea[name=clinical_context]", "Ancien fumeur. Découverte sur un scanner pour toux."
    )
    gp.locator("input[name=studies]").first.check()
    gp.check("input[name=patient_informed]")
    gp.fill("input[name=consent_date]", dt.datetime.now(PARIS).date().isoformat())
    gp.select_option("select[name=consent_method]", "oral")
    gp.click("[data-testid=request-form] button[type=submit]")
    gp.screenshot(path=str(ARTIFACTS / "expertise-draft.png"), full_page=True)
    assert gp.locator("[data-testid=missing]").count() == 0
    gp.click("[data-testid=send-request]")
    assert gp.locator("[data-testid=request-state]").inner_text() == "Envoyée"
    request_url = gp.url
    request_id = request_url.rstrip("/").rsplit("/", 1)[-1]

    # --- A radiologist of the pool finds it in the queue and claims it ---
    expert_context, expert, more = _page(browser, base, "j.moreau@mirc.test")
    errors += more
    expert.goto(f"{base}/teleexpertise/")
    expert.locator(f"[data-testid=queue] [data-request='{request_id}'] a").first.click()
    assert QUESTION in expert.locator("[data-testid=question]").inner_text()
    expert.click("[data-testid=claim-request]")
    assert expert.locator("[data-testid=request-state]").inner_text() == "Acceptée"

    # --- One question, one answer ---
    expert.click("[data-testid=ask-toggle]")
    expert.fill("textarea[name=question]", "Des scanners antérieurs pour comparer ?")
    expert.click("[data-testid=ask-information]")
    assert expert.locator("[data-testid=request-state]").inner_text() == "Précisions demandées"
    gp.goto(request_url)
    assert "Des scanners antérieurs" in gp.locator("[data-testid=thread]").inner_text()
    gp.fill("[data-testid=message-form] textarea[name=body]", "Aucun scanner antérieur.")
    gp.click("[data-testid=post-message]")
    assert gp.locator("[data-testid=request-state]").inner_text() == "Acceptée"

    # --- The expert opens a live review of the CT with the GP ---
    expert.goto(request_url)
    expert.click("[data-testid=start-review]")
    expert.wait_for_url("**/revues/**")
    gp.goto(request_url)
    gp.click("[data-testid=join-review]")
    for page in (expert, gp):
        _wait(
            page,
            lambda page=page: (
                page.locator("[data-mirc-viewer]").get_attribute("data-review") == "connected"
            ),
            timeout=20,
        )
    _wait(expert, lambda: expert.locator("[data-testid=presence] li").count() == 2)
    expert.screenshot(path=str(ARTIFACTS / "expertise-live-review.png"), full_page=True)

    # --- The report, signed and sent ---
    expert.goto(request_url)
    expert.fill("textarea[name=findings]", "Nodule solide de 8 mm du lobe inférieur gauche.")
    expert.fill("textarea[name=conclusion]", "Nodule indéterminé, faible probabilité.")
    expert.fill("textarea[name=recommendation]", "Scanner thoracique de contrôle à 3 mois.")
    expert.check("input[name=needs_exam]")
    expert.fill("input[name=exam_detail]", "TDM thoracique à 3 mois")
    expert.click("[data-testid=save-report]")
    expert.click("[data-testid=sign-report]")
    # The confirmation step: the summary, then the password as the signature.
    assert "Nodule indéterminé" in expert.locator("[data-testid=sign-summary]").inner_text()
    expert.fill("[data-testid=sign-form] input[name=password]", DEMO_PASSWORD)
    expert.click("[data-testid=confirm-sign]")
    assert expert.locator("[data-testid=request-state]").inner_text() == "Répondue"
    assert "Signé par" in expert.locator("[data-testid=signature]").inner_text()

    # --- The PDF reaches the GP, who reads it and closes the request ---
    gp.goto(f"{base}/notifications/")
    assert f"compte rendu de la demande de télé-expertise n° {request_id}" in (
        gp.locator("main").inner_text().lower()
    )
    gp.goto(request_url)
    link = gp.locator("[data-testid=report-pdf-download]")
    link.wait_for(timeout=20_000)
    response = gp.request.get(base + link.get_attribute("href"))
    assert response.status == 200
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(response.body())).pages)
    for expected in (
        "Compte rendu de télé-expertise",
        patient_name,
        "Nodule indéterminé, faible probabilité.",
        "Signé électroniquement",
        "TE2",
    ):
        assert expected in text, expected
    gp.locator("[data-testid=close-form] input[value=exam_avoided]").check()
    gp.click("[data-testid=close-request]")
    assert gp.locator("[data-testid=request-state]").inner_text() == "Clôturée"
    gp.screenshot(path=str(ARTIFACTS / "expertise-request-closed.png"), full_page=True)

    # --- The billing office sees the two acts; the programme sees the indicators ---
    billing_context, billing, more = _page(browser, base, "v.morel@mirc.test")
    errors += more
    today = dt.datetime.now(PARIS).date()
    billing.goto(
        f"{base}/teleexpertise/actes/?start={today.replace(day=1).isoformat()}"
        f"&end={today.isoformat()}"
    )
    rows = billing.locator("[data-testid=acts] tbody tr", has_text=patient_name)
    codes = {rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
    assert {"TE2"} <= codes  # the expert's act at CHRU de Tours (the RQD is the practice's)
    billing.screenshot(path=str(ARTIFACTS / "expertise-acts.png"), full_page=True)

    programme_context, programme, more = _page(browser, base, "m.dumas@mirc.test")
    errors += more
    programme.goto(f"{base}/teleexpertise/indicateurs/")
    row = programme.locator("table").first.locator("tbody tr", has_text=POOL)
    sent, avoided, exams = _shell(
        manage,
        "from expertise.models import Request as R;"
        f"q = R.objects.filter(pool__name='{POOL}', sent_at__isnull=False);"
        "c = q.filter(state='closed');"
        "print(q.count(), c.filter(outcome__endswith='avoided')"
        ".exclude(outcome='not_avoided').count(), c.filter(outcome='exam_avoided').count())",
    ).split()
    # This request counts among the pool's requests, among those that avoided a referral or
    # an exam, and among those that avoided an exam (the GP's answer).
    cells = {
        header: row.locator("td").nth(number).inner_text()
        for number, header in enumerate(
            programme.locator("table").first.locator("thead th").all_text_contents()[1:]
        )
    }
    assert cells["Demandes envoyées"] == sent
    assert f"{avoided} / " in cells["Consultation ou examen évité (demandes clôturées)"]
    assert f"dont examen : {exams}," in cells["Consultation ou examen évité (demandes clôturées)"]
    programme.screenshot(path=str(ARTIFACTS / "expertise-indicators.png"), full_page=True)

    assert not errors, errors
    for context in (gp_context, expert_context, billing_context, programme_context):
        context.close()
