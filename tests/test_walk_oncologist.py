"""The oncologist's walk (Dr Claire Martin, c.martin@mirc.test) at the pilot's two screen
sizes: her patient's page (age, birthplace, RCP cases), then a new RCP case for another patient
filled in as the pilot asked (organs of the chosen body system, the ICD-10 topography searched
by a word), saved and submitted, each step confirmed.

Each size walks its own demo patients, so the two runs do not depend on each other.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.utils import timezone, translation

from portal.communes import birth_place_label
from rcp import frcp
from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

ONCOLOGIST = "c.martin@mirc.test"
THORACIC = "RCP thoracique — CHRU de Tours"
RESPIRATORY = "312419003"
# Her patients by rank (demo/rcp.py): 0 has a case on today's agenda, 1 a validated decision;
# the walks create their cases for patients without one, a different one per size.
WALKS = {"1366x768": {"shown": 0, "new_case": 4}, "tablet": {"shown": 1, "new_case": 5}}

PATIENTS = """
import json
from portal.models import CareRelationship, CareRole
rows = (
    CareRelationship.objects.filter(
        professional__user__email="c.martin@mirc.test", role=CareRole.REFERRING,
        ended_at__isnull=True,
    )
    .order_by("patient_id")
    .values_list("patient_id", "patient__birth_date", "patient__birth_place_code")
)
print(json.dumps([[pk, str(born), place] for pk, born, place in rows]))
"""


def _her_patients(manage) -> list[tuple[int, dt.date, str]]:
    out = manage("shell", "-c", PATIENTS).stdout.strip().splitlines()[-1]
    return [(pk, dt.date.fromisoformat(born), place) for pk, born, place in json.loads(out)]


def _age(born: dt.date) -> int:
    today = timezone.localdate()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _messages(page) -> str:
    return page.locator("ul.messages").inner_text()


@pytest.mark.parametrize("size", list(SIZES))
def test_the_oncologist_reads_her_patient_and_submits_a_case(demo_server, browser, size):  # noqa: F811
    base, manage = demo_server
    patients = _her_patients(manage)
    shown_pk, born, place = patients[WALKS[size]["shown"]]
    new_case_pk = patients[WALKS[size]["new_case"]][0]
    walk = open_as(browser, base, ONCOLOGIST, role="oncologist", size=size)
    page = walk.page

    # Her patient's page: the age beside the birth date, the commune's name, the RCP case.
    walk.goto(f"/patients/{shown_pk}/")
    birth = page.locator("[data-testid=patient-birth-date]").inner_text()
    assert f"({_age(born)} ans)" in birth
    with translation.override("fr"):
        expected_place = birth_place_label(place)
    assert page.locator("[data-testid=patient-birth-place]").inner_text().startswith(expected_place)
    assert not re.fullmatch(r"\s*\d{5}\s*", expected_place)
    cases = page.locator("[data-testid=patient-rcp-cases]")
    assert THORACIC in cases.inner_text()
    assert cases.locator("a[href^='/rcp/dossiers/']").count() >= 1
    walk.shot("patient-page")
    walk.assert_fits_width("the patient page")

    # A new case for another of her patients.
    walk.goto(f"/patients/{new_case_pk}/")
    page.click("a[href$='/rcp/nouveau/']")
    page.select_option("select[name=committee]", label=THORACIC)
    page.click("main form[method=post] button[type=submit]")
    page.wait_for_url(re.compile(r".*/rcp/dossiers/\d+/$"))
    assert "Brouillon de dossier créé" in _messages(page)
    case_url = page.url

    # The body system first: the organ list then holds only its organs.
    page.select_option("#id_nature", frcp.NATURE_ORGAN)
    page.select_option("#id_organ_system", RESPIRATORY)
    organs = page.locator("#id_organ option").evaluate_all("options => options.map(o => o.value)")
    assert set(organs) - {""} == set(frcp.organs_of(RESPIRATORY))
    assert "69695003" not in organs  # the stomach is not in the chest
    page.select_option("#id_organ", "MED-255")
    walk.shot("organs-of-the-system")

    # The topography by a word: "poumon" lists C34.x, she picks the upper lobe.
    page.locator("#id_topography").press_sequentially("poumon", delay=30)
    suggestion = page.locator(".code-suggestions [role=option][data-code='C34.1']")
    suggestion.wait_for(state="visible", timeout=10_000)
    walk.shot("topography-suggestions")
    walk.assert_fits_width("the topography suggestions")
    suggestion.click()
    assert page.input_value("#id_topography") == "C34.1"
    chosen = page.locator(".field:has(#id_topography) .code-chosen")
    assert chosen.inner_text() == frcp.topography_label("C34.1")
    assert chosen.get_attribute("lang") == "fr"

    page.fill("#id_question", "Lobectomie d'emblée ou traitement néoadjuvant ?")
    page.select_option("#id_phase", frcp.PHASE_INITIAL)
    page.fill("#id_morphology", "8140/3")
    page.fill("#id_tnm_t", "T2a")
    page.fill("#id_tnm_n", "N0")
    page.fill("#id_tnm_m", "M0")
    page.select_option("#id_performance_status", frcp.OMS.concepts[0].code)
    page.select_option("#id_presentation", frcp.CASE_DISCUSSED)
    page.click("[data-testid=case-form] button[type=submit]")
    page.wait_for_url(case_url)
    assert "Dossier enregistré." in _messages(page)

    # Something to look at in the meeting: the pathology report.
    page.click("text=Joindre un document")
    page.select_option("select[name=kind]", "pathology")
    page.fill("input[name=title]", "Compte rendu anatomopathologique")
    page.set_input_files(
        "input[name=file]",
        {"name": "anapath.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.7\n%%EOF\n"},
    )
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    page.wait_for_url(case_url)
    assert "Document joint." in _messages(page)

    page.click("[data-testid=submit-case]")
    page.wait_for_url(case_url)
    assert "Dossier soumis au comité" in _messages(page)
    today = timezone.localdate().strftime("%d/%m/%Y")
    status = page.locator("[data-testid=case-status]").inner_text()
    assert re.sub(r"\s+", " ", status).strip() == f"Soumis le {today} par Dr Claire Martin"
    walk.shot("submitted")
    walk.assert_fits_width("the submitted case")
    assert not walk.errors, walk.errors
    walk.close()
