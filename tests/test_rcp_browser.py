"""An RCP as its demo users live it, in Chromium against the seeded demo.

The oncologist submits a thoracic case with its CT, the coordinator puts it on the agenda of
today's session and opens it, the members join and the quorum turns green, the chair records and
validates the decision, the fiche RCP comes out as a PDF and the patient's GP is notified.
"""

import io

import pytest
from pypdf import PdfReader

from tests.test_demo_browser import ARTIFACTS, _sign_in, browser, demo_server  # noqa: F401
from tests.waiting import on_page, wait_until

pytestmark = pytest.mark.service("chromium")

BOARD = "RCP thoracique — CHRU de Tours"


def _wait(page, selector_check, timeout=10.0):
    """Polls a Python predicate on the page (the portal's CSP forbids Playwright's eval)."""
    wait_until(selector_check, timeout=timeout, what="the page's condition", sleep=on_page(page))


def _page(browser, base, email):  # noqa: F811
    context = browser.new_context(locale="fr-FR", viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(f"{email}: {m.text}"))
    _sign_in(page, base, email)
    page.wait_for_url(f"{base}/")
    return context, page, errors


def _shell(manage, code: str) -> str:
    return manage("shell", "-c", code).stdout.strip().splitlines()[-1]


def test_a_thoracic_case_from_submission_to_signed_minutes(demo_server, browser):  # noqa: F811
    base, manage = demo_server
    # A thoracic patient of Dr Martin's with a CT, and her GP.
    patient_id, gp_email = _shell(
        manage,
        "from demo.imaging import _patient; from portal.models import CareRelationship;"
        "p = _patient('c.martin@mirc.test', 0);"
        "gp = CareRelationship.objects.filter(patient=p, role='gp', ended_at__isnull=True)"
        ".select_related('professional__user').first();"
        "print(p.pk, gp.professional.user.email if gp else '-')",
    ).split()
    martin_context, martin, errors = _page(browser, base, "c.martin@mirc.test")

    # --- The oncologist submits the case, with the CT ---
    martin.goto(f"{base}/patients/{patient_id}/")
    martin.click(f"a[href='/patients/{patient_id}/rcp/nouveau/']")
    martin.select_option("select[name=committee]", label=BOARD)
    martin.click("main button[type=submit]")
    martin.fill("textarea[name=question]", "Chirurgie après chimiothérapie néoadjuvante ?")
    martin.select_option("select[name=presentation]", "ORG-134")
    martin.select_option("select[name=nature]", "ORG-117")
    martin.select_option("select[name=organ_system]", "312419003")
    martin.select_option("select[name=organ]", "MED-255")
    martin.select_option("select[name=phase]", "MED-268")
    martin.fill("input[name=topography]", "C34.1")
    martin.fill("input[name=morphology]", "8140/3")
    martin.select_option("select[name=tnm_prefix]", "c")
    martin.fill("input[name=tnm_t]", "t2a")
    martin.fill("input[name=tnm_n]", "N1")
    martin.fill("input[name=tnm_m]", "M0")
    martin.select_option("select[name=performance_status]", "MED-264")
    martin.locator("input[name=studies]").first.check()
    martin.click("[data-testid=case-form] button[type=submit]")
    assert martin.locator("[data-testid=missing]").count() == 0
    martin.click("[data-testid=submit-case]")
    assert martin.locator("[data-testid=case-state]").inner_text() == "Soumis"
    case_url = martin.url
    ARTIFACTS.mkdir(exist_ok=True)
    martin.screenshot(path=str(ARTIFACTS / "rcp-case-submitted.png"), full_page=True)

    # --- The coordinator puts it on the next session's agenda ---
    perrin_context, perrin, more = _page(browser, base, "j.perrin@mirc.test")
    errors += more
    perrin.goto(case_url)
    perrin.click("[data-testid=put-on-agenda]")
    assert perrin.locator("[data-testid=case-state]").inner_text() == "À l'ordre du jour"

    # --- The live session: members join, the quorum turns green ---
    assert BOARD in perrin.locator(".page-head h2").inner_text()
    case_id = case_url.rstrip("/").rsplit("/", 1)[-1]
    session_id = _shell(
        manage, f"from rcp.models import Case; print(Case.objects.get(pk={case_id}).session_id)"
    )
    live = f"{base}/rcp/seances/{session_id}/direct/?dossier={case_id}"
    perrin.goto(live)
    # Today's session: the coordinator opens it herself (joining no longer opens it).
    perrin.click("[data-testid=open-session]")
    perrin.locator("[data-testid=session-status]", has_text="En cours").wait_for()
    assert perrin.locator("[data-testid=quorum]").get_attribute("data-met") == "false"
    members = []
    for email in ("a.rousseau@mirc.test", "c.martin@mirc.test", "h.bertrand@mirc.test"):
        context, page, more = _page(browser, base, email)
        errors += more
        page.goto(live)
        page.click("[data-testid=join]")
        members.append((context, page))
    _wait(
        perrin,
        lambda: perrin.locator("[data-testid=quorum]").get_attribute("data-met") == "true",
    )
    # The CT is there, in live shared review, for everybody.
    rousseau = members[0][1]
    assert rousseau.evaluate("window.mircViewers[0].ready.then(() => true)") is True
    for _context, page in members:
        _wait(
            page,
            lambda page=page: (
                page.locator("[data-mirc-viewer]").get_attribute("data-review") == "connected"
            ),
        )
    perrin.screenshot(path=str(ARTIFACTS / "rcp-live-quorum.png"), full_page=True)

    # --- The chair records and validates the decision ---
    rousseau.goto(live)
    rousseau.fill("[data-testid=decision-form] textarea[name=proposal]", "Lobectomie supérieure.")
    rousseau.locator("[data-testid=decision-form] input[value='387713003']").check()
    rousseau.select_option("[data-testid=decision-form] select[name=conforms_to_guideline]", "true")
    rousseau.click("[data-testid=decision-form] button[type=submit]")
    rousseau.click("[data-testid=validate]")
    rousseau.goto(case_url)
    assert rousseau.locator("[data-testid=case-state]").inner_text() == "Décision validée"
    assert "Lobectomie supérieure." in rousseau.locator("[data-testid=decision-v1]").inner_text()

    # --- The fiche RCP comes out as a PDF ---
    link = rousseau.locator(".rcp-outputs a", has_text="Télécharger")
    link.wait_for(timeout=20_000)
    response = rousseau.request.get(base + link.get_attribute("href"))
    assert response.status == 200
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.body())).pages)
    for expected in (BOARD, "Lobectomie supérieure.", "intervention chirurgicale", "C34.1"):
        assert expected in text, expected
    rousseau.screenshot(path=str(ARTIFACTS / "rcp-decision-validated.png"), full_page=True)

    # --- The GP is told, and reads the decision ---
    if gp_email != "-":
        gp_context, gp, more = _page(browser, base, gp_email)
        errors += more
        gp.goto(f"{base}/notifications/")
        assert f"Un avis de {BOARD} est disponible." in gp.locator("main").inner_text()
        gp.goto(case_url)
        assert "Lobectomie supérieure." in gp.locator("[data-testid=decision-v1]").inner_text()
        gp_context.close()
    assert not errors, errors
    for context, _member in members:
        context.close()
    martin_context.close()
    perrin_context.close()


def test_a_perinatal_case_counts_only_with_the_four_core_specialties(demo_server, browser):  # noqa: F811
    """The CPDPN of Tours: the seeded case with its ultrasound, on the next agenda."""
    base, manage = demo_server
    case_id, session_id = _shell(
        manage,
        "from rcp.models import Case;"
        "c = Case.objects.get(committee__kind='cpdpn', state='on_agenda');"
        "print(c.pk, c.session_id)",
    ).split()
    live = f"{base}/rcp/seances/{session_id}/direct/?dossier={case_id}"
    contexts = []
    chair = None
    errors = []
    for email in ("m.petit@mirc.test", "l.fontaine@mirc.test", "h.blanc@mirc.test"):
        context, page, more = _page(browser, base, email)
        errors += more
        page.goto(live)
        page.click("[data-testid=join]")
        contexts.append(context)
        chair = chair or page
    # Three of the four core specialties: no quorum, genetics is missing.
    chair.goto(live)
    quorum = chair.locator("[data-testid=quorum]")
    assert quorum.get_attribute("data-met") == "false"
    assert "Génétique" in quorum.inner_text()
    context, page, more = _page(browser, base, "a.roux@mirc.test")
    errors += more
    page.goto(live)
    page.click("[data-testid=join]")
    contexts.append(context)
    _wait(chair, lambda: chair.locator("[data-testid=quorum]").get_attribute("data-met") == "true")
    # Today's session, opened by its chair before the team's opinion is validated.
    chair.click("[data-testid=open-session]")
    chair.locator("[data-testid=session-status]", has_text="En cours").wait_for()
    # The ultrasound loop is in the viewer (its module script runs after the page reloaded by
    # the opening); the team's opinion is recorded and validated.
    _wait(chair, lambda: chair.evaluate("(window.mircViewers || []).length") > 0, timeout=20)
    assert chair.evaluate("window.mircViewers[0].ready.then(() => true)") is True
    form = chair.locator("[data-testid=decision-form]")
    assert form.locator("textarea[name=proposal]").count() == 0  # a cancer-board field
    form.locator("textarea[name=team_opinion]").fill("Contrôle échographique à 26 SA.")
    form.locator("button[type=submit]").click()
    chair.click("[data-testid=validate]")
    chair.goto(f"{base}/rcp/dossiers/{case_id}/")
    assert chair.locator("[data-testid=case-state]").inner_text() == "Décision validée"
    link = chair.locator(".rcp-outputs a", has_text="Télécharger")
    link.wait_for(timeout=20_000)
    pdf = chair.request.get(base + link.get_attribute("href")).body()
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "AVIS DU CPDPN" in text and "Contrôle échographique à 26 SA." in text
    chair.screenshot(path=str(ARTIFACTS / "rcp-cpdpn-validated.png"), full_page=True)
    assert not errors, errors
    for context in contexts:
        context.close()
