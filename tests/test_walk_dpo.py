"""The data protection officer's walk (Nathalie Simon, n.simon@mirc.test) at the pilot's two
screen sizes: a demo patient found in the audit trail by name, by INS and by IPP, her RCP
case's events named "Dossier RCP n° … — NOM I.", a care-team change named as such.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

DPO = "n.simon@mirc.test"

# A demo patient with an INS, an IPP, an audited RCP case and a care-team change.
PATIENT = """
import json
from portal.models import AuditEvent, Patient
from portal.audit_labels import patient_short_name
case_events = AuditEvent.objects.filter(object_type="rcp.case", patient__isnull=False)
team = AuditEvent.objects.filter(
    object_type="portal.carerelationship", detail__has_key="granted_to"
).values("patient")
for event in case_events.filter(patient__in=team).exclude(patient__ins_matricule="").order_by("id"):
    patient = event.patient
    ipp = patient.identifiers.values_list("value", flat=True).first()
    if not ipp:
        continue
    print(json.dumps({
        "pk": patient.pk,
        "name": patient.birth_name,
        "short": patient_short_name(patient),
        "ins": patient.ins_matricule,
        "ipp": ipp,
        "case": int(event.object_id),
        "case_event": event.event_id,
    }))
    break
"""


def _search(walk, query: str, **filters) -> None:
    page = walk.page
    page.locator("input[name=q]").fill(query)
    for name, value in filters.items():
        page.locator(f"select[name={name}]").select_option(value)
    page.locator("[data-testid=audit-search] button[type=submit]").click()
    page.wait_for_load_state()


@pytest.mark.parametrize("size", list(SIZES))
def test_the_dpo_finds_a_patient_and_reads_her_events(demo_server, browser, size):  # noqa: F811
    base, manage = demo_server
    patient = json.loads(manage("shell", "-c", PATIENT).stdout.strip().splitlines()[-1])
    walk = open_as(browser, base, DPO, role="dpo", size=size)
    page = walk.page
    try:
        walk.goto("/audit/")
        # No internal number to know: the name, then her case's events.
        _search(walk, patient["name"].lower(), event_id=patient["case_event"])
        found = page.locator("[data-testid=patients-found]")
        # Namesakes are listed too: hers is the one with her birth date and INS.
        mine = found.locator(f"a[href$='patient={patient['pk']}']")
        assert re.search(patient["name"], mine.inner_text(), re.IGNORECASE)
        mine.click()
        page.wait_for_url(f"**patient={patient['pk']}**")
        objects = page.locator("[data-testid=event-object]").all_inner_texts()
        label = f"Dossier RCP n° {patient['case']} — {patient['short']}"
        assert any(text.startswith(label) for text in objects), objects
        assert not any(text.startswith("rcp.case") for text in objects)
        walk.assert_fits_width("the audit trail of a patient")
        walk.shot("audit-by-name")

        # By INS: one patient, chosen at once; the care-team changes named as such.
        _search(walk, patient["ins"], event_id="110113")
        assert page.locator("[data-testid=patients-found] tbody tr").count() == 1
        kinds = page.locator("[data-testid=event-kind]").all_inner_texts()
        assert any(kind.startswith("Équipe de soins : ajout") for kind in kinds), kinds
        assert page.locator("[data-testid=access-report]").is_visible()
        walk.assert_fits_width("the care-team changes")
        walk.shot("audit-by-ins-care-team")

        # By IPP, whichever establishment gave it.
        _search(walk, patient["ipp"], event_id="")
        rows = page.locator("[data-testid=patients-found] tbody tr")
        assert rows.count() == 1
        assert patient["name"].upper() in rows.first.inner_text().upper()
        walk.assert_fits_width("the search by IPP")
        walk.shot("audit-by-ipp")
        assert not walk.errors, walk.errors
    finally:
        walk.close()
