"""The RCP coordinator's home (Julie Perrin, j.perrin@mirc.test) at the pilot's two screen
sizes: her worklist across the thoracic board and the CPDPN, as the demo leaves it (a case
waiting for an agenda, a draft with what it lacks, a postponed case, held sessions without
minutes); she follows the link of the waiting case to today's session, puts it on the agenda,
and finds it gone from her worklist; the draft's link opens the case with what it lacks.

The sizes share the module's demo: each walk starts with the waiting case submitted again.
"""

from __future__ import annotations

import pytest

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

COORDINATOR = "j.perrin@mirc.test"

WAITING_AGAIN = """
from rcp.models import Case
from demo.imaging import _patient
case = Case.objects.get(patient=_patient("c.martin@mirc.test", 6))
Case.objects.filter(pk=case.pk).update(state="submitted", session=None, agenda_position=None)
print(case.pk)
"""


def _rows(page, section: str):
    return page.locator(f"[data-testid=worklist-{section}] ul.worklist-rows > li")


@pytest.mark.parametrize("size", list(SIZES))
def test_the_coordinator_works_from_her_worklist(demo_server, browser, size):  # noqa: F811
    base, manage = demo_server
    waiting_case = int(manage("shell", "-c", WAITING_AGAIN).stdout.strip().splitlines()[-1])
    walk = open_as(browser, base, COORDINATOR, role="coordinator-home", size=size)
    page = walk.page

    # Her home opens on the worklist, above the tiles.
    worklist = page.get_by_test_id("worklist")
    assert worklist.is_visible()
    walk.assert_above_fold("[data-testid=worklist] h2")
    assert worklist.bounding_box()["y"] < page.locator(".cards").bounding_box()["y"]
    # Every section the demo feeds.
    waiting = _rows(page, "waiting")
    assert waiting.count() == 1
    assert f"/rcp/dossiers/{waiting_case}/" in waiting.first.inner_html()
    incomplete = _rows(page, "incomplete")
    assert incomplete.count() >= 1
    assert incomplete.first.locator("[data-testid=worklist-missing] li").count() >= 2
    assert _rows(page, "postponed").count() >= 1
    minutes = _rows(page, "minutes")
    assert minutes.count() >= 2  # the thoracic board's and the CPDPN's held sessions
    assert (
        minutes.first.locator("[data-testid=worklist-minutes-state]").get_attribute("data-state")
        == "none"
    )
    assert page.get_by_test_id("worklist-to-close").is_visible()
    walk.assert_fits_width("home")
    walk.shot("worklist")

    # The waiting case's link: the next session of its board, where she puts it on the agenda.
    waiting.first.get_by_test_id("worklist-put-on-agenda").click()
    page.wait_for_url("**/rcp/seances/*/")
    put = page.locator(f"form:has(input[name=case][value='{waiting_case}']) button")
    assert put.is_visible()
    walk.assert_fits_width("the session")
    put.click()
    page.wait_for_url("**/rcp/seances/*/")
    assert page.locator(f"[data-testid=agenda] a[href='/rcp/dossiers/{waiting_case}/']").count()
    walk.shot("put-on-agenda")

    # Back home: no longer waiting.
    walk.goto("/")
    assert _rows(page, "waiting").count() == 0

    # The draft's link: the case, with what it still lacks.
    _rows(page, "incomplete").first.locator("a.button").click()
    page.wait_for_url("**/rcp/dossiers/*/")
    assert page.get_by_test_id("missing").is_visible()
    walk.assert_fits_width("the draft")
    walk.shot("draft-missing")

    # A held session without minutes: its page, where the minutes are made.
    walk.goto("/")
    _rows(page, "minutes").first.locator("a.button").click()
    page.wait_for_url("**/rcp/seances/*/")
    assert page.locator(".rcp-outputs").is_visible()
    walk.shot("minutes-to-make")
    assert not walk.errors, walk.errors
    walk.close()
