"""A doctor newly in charge of a patient, in Chromium against the seeded demo.

Dr Anne Roux (a.roux, geneticist at the CHRU de Tours) takes over a thoracic patient of Dr
Claire Martin's (c.martin, her referring doctor): she looks the patient up by her traits,
asks for access, Dr Martin grants it from her notification, and the record opens. At night,
Dr Vincent Carpentier (v.carpentier, urologist in Blois) breaks the glass for another of
Dr Martin's patients: a banner follows him on every page, and Nathalie Simon (n.simon, the
data protection officer) reviews it in her queue.
"""

import pytest

from tests.test_demo_browser import ARTIFACTS, browser, demo_server  # noqa: F401
from tests.test_rcp_browser import _page, _shell, _wait

pytestmark = pytest.mark.service("chromium")

PATIENT = (
    "from demo.imaging import _patient; p = _patient('c.martin@mirc.test', {n});"
    "print(p.pk, p.birth_name, p.first_names.split()[0], p.birth_date.isoformat(),"
    " p.display_name, sep='|')"
)


def _look_up(page, base, birth_name, first_name, birth_date):
    page.goto(f"{base}/acces/recherche/")
    page.fill("input[name=birth_name]", birth_name)
    page.fill("input[name=first_name]", first_name)
    page.fill("input[name=birth_date]", birth_date)
    page.click("[data-testid=access-lookup-form] button[type=submit]")
    assert (
        "Un patient correspond" in page.locator("[data-testid=access-lookup-result]").inner_text()
    )


def test_an_access_request_granted_by_the_referring_doctor(demo_server, browser):  # noqa: F811
    base, manage = demo_server
    patient_id, birth_name, first_name, birth_date, shown = _shell(
        manage, PATIENT.format(n=1)
    ).split("|")
    roux_context, roux, errors = _page(browser, base, "a.roux@mirc.test")
    ARTIFACTS.mkdir(exist_ok=True)

    # Not in her care team: the record does not open (asked with her session, outside the
    # page, whose console would log the 404).
    assert roux_context.request.get(f"{base}/patients/{patient_id}/").status == 404
    _look_up(roux, base, birth_name, first_name, birth_date)
    roux.fill("textarea[name=reason]", "Consultation de génétique oncologique demandée par le CHU.")
    roux.click("[data-testid=access-request-send]")
    roux.wait_for_url("**/acces/mes-demandes/")
    assert "En attente" in roux.locator("[data-testid=my-access-requests]").inner_text()

    martin_context, martin, more = _page(browser, base, "c.martin@mirc.test")
    errors += more
    martin.goto(f"{base}/notifications/")
    martin.locator("main a[href='/acces/demandes-recues/']").first.click()
    assert "Consultation de génétique" in martin.locator("main").inner_text()
    martin.screenshot(path=str(ARTIFACTS / "access-request-inbox.png"), full_page=True)
    martin.locator("[data-testid=access-grant]").first.click()
    assert "Accès accordé." in martin.locator(".messages").inner_text()

    roux.goto(f"{base}/acces/mes-demandes/")
    assert "Accordée" in roux.locator("[data-testid=my-access-requests]").inner_text()
    roux.locator(f"[data-testid=my-access-requests] a[href='/patients/{patient_id}/']").click()
    _wait(roux, lambda: shown in roux.locator("main").inner_text())
    assert errors == []
    roux_context.close()
    martin_context.close()


def test_emergency_access_with_its_banner_and_the_dpo_review(demo_server, browser):  # noqa: F811
    base, manage = demo_server
    patient_id, birth_name, first_name, birth_date, shown = _shell(
        manage, PATIENT.format(n=2)
    ).split("|")
    carpentier_context, carpentier, errors = _page(browser, base, "v.carpentier@mirc.test")
    ARTIFACTS.mkdir(exist_ok=True)

    _look_up(carpentier, base, birth_name, first_name, birth_date)
    carpentier.click("[data-testid=access-emergency]")
    carpentier.fill("textarea[name=reason]", "Patient inconsciente aux urgences de Blois, la nuit.")
    carpentier.check("[data-testid=emergency-confirm]")
    carpentier.click("[data-testid=emergency-open]")
    carpentier.wait_for_url(f"**/patients/{patient_id}/")
    banner = carpentier.locator("[data-testid=emergency-banner]")
    assert shown in banner.inner_text() and "Accès en urgence" in banner.inner_text()
    carpentier.screenshot(path=str(ARTIFACTS / "emergency-banner.png"), full_page=True)
    carpentier.goto(f"{base}/")
    assert shown in carpentier.locator("[data-testid=emergency-banner]").inner_text()

    simon_context, simon, more = _page(browser, base, "n.simon@mirc.test")
    errors += more
    # The DPO reaches her queue from the audit trail (or from the notification she got).
    simon.goto(f"{base}/audit/")
    simon.click("[data-testid=emergency-queue-link]")
    simon.wait_for_url(f"{base}/acces/urgences/")
    assert "inconsciente aux urgences de Blois" in simon.locator("main").inner_text()
    simon.fill("main textarea[name=comment]", "Admission vérifiée auprès du CH de Blois.")
    simon.click("[data-testid=emergency-justified]")
    assert "Revue enregistrée." in simon.locator(".messages").inner_text()
    simon.goto(f"{base}/acces/urgences/?revues=1")
    assert "Admission vérifiée" in simon.locator("main").inner_text()
    simon.screenshot(path=str(ARTIFACTS / "emergency-review.png"), full_page=True)

    # The emergency is over: Dr Carpentier ends his access from the banner; the record closes.
    carpentier.click("[data-testid=emergency-end]")
    _wait(carpentier, lambda: "est terminé" in carpentier.locator(".messages").inner_text())
    assert carpentier.locator("[data-testid=emergency-banner]").count() == 0
    assert errors == []
    # The record answers 404 again, like a missing id (the console notes that 404).
    assert carpentier.goto(f"{base}/patients/{patient_id}/").status == 404
    assert shown not in carpentier.locator("main").inner_text()
    carpentier_context.close()
    simon_context.close()
