"""The RCP coordinator's walk through a meeting (Julie Perrin, j.perrin@mirc.test) at the
pilot's two screen sizes: she opens today's thoracic session herself ("Ouvrir la séance"),
watches the quorum, has the decision recorded and validated (at the laptop size with the
quorum; at the tablet size the quorum never comes, so she asks for a validation without quorum
with its reason and the chair, Pr Rousseau, confirms it from his own session), closes the
session and reads "Tenue", then tries to plan a session in the past and is told why not.

Each size gets its own session and case, made through the services in the demo's shell, so
that the two runs do not depend on each other.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

COORDINATOR = "j.perrin@mirc.test"
CHAIR = "a.rousseau@mirc.test"
BOARD = "RCP thoracique — CHRU de Tours"

# Today's session in half an hour, with one of Dr Martin's patients on its agenda (a standard
# case, registered: no study needed); printed as JSON.
TODAY = """
import datetime as dt, json
from django.utils import timezone
from demo.imaging import _patient
from portal.audit import Actor
from portal.models import Professional
from rcp import frcp, services
from demo.rcp import THORACIC_CASE
from rcp.models import Committee
board = Committee.objects.get(name={board!r})
(session,) = services.sessions_schedule(
    by=Actor.system("tests"),
    committee=board,
    first_start=timezone.now() + dt.timedelta(minutes=30),
    duration=dt.timedelta(hours=1),
)
doctor = Actor(user=Professional.objects.get(user__email="c.martin@mirc.test").user)
case = services.case_create(patient=_patient("c.martin@mirc.test", {rank}), committee=board,
                            by=doctor)
case = services.case_update(case=case, revision=case.revision, by=doctor, **{{
    **THORACIC_CASE, "presentation": frcp.CASE_REGISTERED,
    "question": "Marche à suivre selon le référentiel ({size}) ?"}})
case = services.case_submit(case=case, by=doctor)
coordinator = Actor(user=Professional.objects.get(user__email={coordinator!r}).user)
services.case_put_on_agenda(case=case, session=session, by=coordinator)
print(json.dumps({{"session": session.pk, "case": case.pk, "committee": board.pk}}))
"""

# The board's quorum takes its seats (as if they had clicked "Je suis là").
SEATED = """
from portal.audit import Actor
from portal.models import Professional
from rcp import services
from rcp.models import Session
session = Session.objects.get(pk={session})
for email in ("a.rousseau", "c.martin", "h.bertrand"):
    professional = Professional.objects.get(user__email=email + "@mirc.test")
    services.attendance_arrive(
        session=session, professional=professional, mode="remote", by=Actor.system("tests")
    )
print("ok")
"""


def _shell(manage, code: str) -> str:
    return manage("shell", "-c", code).stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("size", list(SIZES))
def test_the_coordinator_runs_a_meeting_from_opening_to_held(demo_server, browser, size):  # noqa: F811
    base, manage = demo_server
    rank = 2 if size == "1366x768" else 3
    facts = json.loads(
        _shell(
            manage,
            TODAY.format(board=BOARD, rank=rank, size=size, coordinator=COORDINATOR),
        )
    )
    session, case = facts["session"], facts["case"]
    perrin = open_as(browser, base, COORDINATOR, role="coordinator", size=size)
    page = perrin.page

    # --- The session's page: planned, with the explicit "Ouvrir la séance" ---
    perrin.goto(f"/rcp/seances/{session}/")
    assert page.locator("[data-testid=session-status]").inner_text() == "Planifiée"
    perrin.assert_fits_width("the session page")
    perrin.shot("session-planned")
    page.click("[data-testid=open-session]")
    page.wait_for_url(f"**/rcp/seances/{session}/direct/**")
    assert "La séance est ouverte" in page.locator(".messages").inner_text()
    assert page.locator("[data-testid=session-status]").inner_text() == "En cours"
    assert page.locator("[data-testid=video-link]").count() == 1  # the board's video link

    # --- The quorum, live ---
    live = f"/rcp/seances/{session}/direct/?dossier={case}"
    perrin.goto(live)
    quorum = page.locator("[data-testid=quorum]")
    assert quorum.get_attribute("data-met") == "false"
    perrin.assert_fits_width("the live page")
    perrin.shot("live-open")
    form = page.locator("[data-testid=decision-form]")
    form.locator("textarea[name=proposal]").fill(f"Traitement selon le référentiel ({size}).")
    form.locator("button[type=submit]").click()
    page.wait_for_url(f"**{live}")

    if size == "1366x768":
        _shell(manage, SEATED.format(session=session))
        perrin.wait_until(
            lambda: page.locator("[data-testid=quorum]").get_attribute("data-met") == "true",
            timeout=15,
            what="the quorum to turn green",
        )
        perrin.shot("live-quorum")
        page.click("[data-testid=validate]")
        page.wait_for_url(f"**{live}")
        decision = page.locator("[data-testid=decision-v1]")
        assert "Traitement selon le référentiel" in decision.inner_text()
        assert "Quorum atteint" in decision.inner_text()
    else:
        # Nobody else comes: validating is refused, saying what is missing.
        page.click("[data-testid=validate]")
        page.wait_for_url(f"**{live}")
        assert "Le quorum n'est pas atteint" in page.locator(".messages").inner_text()
        page.click("[data-testid=without-quorum] summary")
        page.fill("[data-testid=without-quorum] textarea[name=reason]", "Radiothérapeute absent.")
        page.click("[data-testid=ask-without-quorum]")
        page.wait_for_url(f"**{live}")
        assert page.locator("[data-testid=without-quorum-pending]").count() == 1
        assert page.locator("[data-testid=confirm-without-quorum]").count() == 0
        perrin.shot("without-quorum-asked")
        # The chair, from his own session, confirms as second validator.
        rousseau = open_as(browser, base, CHAIR, role="chair", size=size)
        rousseau.goto(live)
        rousseau.page.click("[data-testid=confirm-without-quorum]")
        rousseau.page.wait_for_url(f"**{live}")
        confirmed = rousseau.page.locator("[data-testid=without-quorum-v1]").inner_text()
        assert "Validée sans quorum" in confirmed and "Radiothérapeute absent." in confirmed
        assert not rousseau.errors, rousseau.errors
        rousseau.close()
        perrin.goto(live)
        assert page.locator("[data-testid=without-quorum-v1]").count() == 1
        perrin.shot("without-quorum-validated")

    # --- She closes the session: held, a case was decided in it ---
    page.click("[data-testid=close-session]")
    page.wait_for_url(f"**/rcp/seances/{session}/")
    assert page.locator("[data-testid=session-status]").inner_text() == "Tenue"
    assert "Clôturée le" in page.locator("[data-testid=session-trace]").inner_text()
    perrin.assert_fits_width("the held session")
    perrin.shot("session-held")

    # --- Planning a session in the past is refused, with the reason ---
    perrin.goto(f"/rcp/comites/{facts['committee']}/")
    page.click("[data-testid=schedule] summary")
    yesterday = timezone.localtime(timezone.now() - dt.timedelta(days=1))
    page.fill(
        "[data-testid=schedule-form] input[name=first_start]", yesterday.strftime("%Y-%m-%dT%H:%M")
    )
    page.click("[data-testid=schedule-form] button[type=submit]")
    assert "ne peut pas être planifiée dans le passé" in page.locator(".messages").inner_text()
    perrin.assert_fits_width("the committee page")
    perrin.shot("planning-refused")
    assert not perrin.errors, perrin.errors
    perrin.close()
