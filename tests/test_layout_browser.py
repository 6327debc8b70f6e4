"""Every role's main pages at the pilot's two screen sizes: a 3C's 1366×768 laptop and a
tablet held upright (768×1024).

The pilot found the viewer's slider and the bottom of the image below the fold at 1366×768,
and on the tablet the top menu wrapped into three rows while the tele-expertise queue and the
indicator and audit tables made the page wider than the screen. Here: no page is wider than
the screen at either size, the viewer (its toolbar, image and slider) fits the screen, the
tablet's menu folds behind one button, the queue shows each request's deadline. Screenshots
go to test-artifacts/ (walk-layout-<role>-<size>-…).

One demo server for the module (tests/test_demo_browser.demo_server), one browser context per
role and size.
"""

import json

import pytest

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

# The demo's ids, read from its database: the pages each role opens.
IDS = """
import json
from expertise.models import Request
from imaging.models import Study
from rcp.models import Case, Committee
doctor_case = Case.objects.filter(
    state="on_agenda", committee__name__startswith="RCP thoracique"
).order_by("pk").first()
study = doctor_case.studies.order_by("-instance_count").first()
expert_request = Request.objects.filter(expert__email="j.moreau@mirc.test").order_by("pk").first()
print(json.dumps({
    "patient": doctor_case.patient_id,
    "study": study.pk,
    "committee": doctor_case.committee_id,
    "session": doctor_case.session_id,
    "case": doctor_case.pk,
    "request": expert_request.pk,
}))
"""


@pytest.fixture(scope="module")
def demo(demo_server):  # noqa: F811
    base, manage = demo_server
    ids = json.loads(manage("shell", "-c", IDS).stdout.strip().splitlines()[-1])
    return base, ids


def _pages(ids) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Role -> (e-mail, [(step, path)]): each role's main pages."""
    return {
        "oncologist": (
            "c.martin@mirc.test",
            [
                ("home", "/"),
                ("patients", "/patients/"),
                ("patient", f"/patients/{ids['patient']}/"),
                ("imaging-dossier", f"/patients/{ids['patient']}/imagerie/"),
                ("viewer", f"/imagerie/examens/{ids['study']}/visionneuse/"),
                ("rcp-case", f"/rcp/dossiers/{ids['case']}/"),
            ],
        ),
        "coordinator": (
            "j.perrin@mirc.test",
            [
                ("rcp", "/rcp/"),
                ("committee", f"/rcp/comites/{ids['committee']}/"),
                ("session", f"/rcp/seances/{ids['session']}/"),
                ("live", f"/rcp/seances/{ids['session']}/direct/"),
            ],
        ),
        "expert": (
            "j.moreau@mirc.test",
            [
                ("queue", "/teleexpertise/"),
                ("request", f"/teleexpertise/demandes/{ids['request']}/"),
            ],
        ),
        "gp": ("p.lemoine@mirc.test", [("home", "/"), ("queue", "/teleexpertise/")]),
        "programme": (
            "m.dumas@mirc.test",
            [
                ("rcp-indicators", "/rcp/indicateurs/"),
                ("expertise-indicators", "/teleexpertise/indicateurs/"),
                ("imaging-indicators", "/imagerie/indicateurs/"),
            ],
        ),
        "dpo": ("n.simon@mirc.test", [("audit", "/audit/")]),
    }


def test_no_main_page_is_wider_than_the_screen_at_either_size(demo, browser):  # noqa: F811
    base, ids = demo
    too_wide = []
    for role, (email, pages) in _pages(ids).items():
        for size in SIZES:
            walk = open_as(browser, base, email, role=f"layout-{role}", size=size)
            try:
                for step, path in pages:
                    walk.goto(path)
                    assert walk.page.locator("main").count() == 1, f"{role}: {path} did not open"
                    walk.shot(step)
                    overflow = walk.page_width_overflow()
                    if overflow > 0:
                        too_wide.append(f"{role} at {size}: {path} is {overflow}px too wide")
            finally:
                walk.close()
    assert not too_wide, "\n".join(too_wide)


def _viewer_ready(walk) -> None:
    assert walk.page.evaluate("window.mircViewers[0].ready.then(() => true)") is True


def test_the_viewer_fits_a_1366x768_screen(demo, browser):  # noqa: F811
    base, ids = demo
    walk = open_as(browser, base, "c.martin@mirc.test", role="layout-oncologist", size="1366x768")
    try:
        # The study's own page: toolbar, image and slider shown as the page opens.
        walk.goto(f"/imagerie/examens/{ids['study']}/visionneuse/")
        _viewer_ready(walk)
        walk.shot("viewer-fold")
        for part in (".mv-toolbar", "[data-testid=viewport-1]", "[data-testid=slider]"):
            walk.assert_above_fold(part)
    finally:
        walk.close()

    walk = open_as(browser, base, "j.perrin@mirc.test", role="layout-coordinator", size="1366x768")
    try:
        # The live session: the viewer sits below the case; once scrolled to, it fits whole.
        walk.goto(f"/rcp/seances/{ids['session']}/direct/?dossier={ids['case']}")
        _viewer_ready(walk)
        walk.page.locator(".mirc-viewer").evaluate("element => element.scrollIntoView()")
        walk.shot("live-viewer")
        for part in (".mirc-viewer", "[data-testid=viewport-1]", "[data-testid=slider]"):
            walk.assert_above_fold(part)
    finally:
        walk.close()


def test_on_a_tablet_the_menu_folds_behind_one_button(demo, browser):  # noqa: F811
    base, _ids = demo
    walk = open_as(browser, base, "n.simon@mirc.test", role="layout-dpo", size="tablet")
    try:
        page = walk.page
        topbar = page.locator(".topbar").bounding_box()
        # One row: the brand, the menu button, the bell, the user's menu, the languages.
        assert topbar["height"] < 80, f"the top bar is {topbar['height']:.0f}px high"
        toggle = page.locator("[data-menu-toggle]")
        audit_link = page.locator(".mainnav a[href='/audit/']")
        assert toggle.is_visible() and not audit_link.is_visible()
        assert toggle.get_attribute("aria-expanded") == "false"
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        assert audit_link.is_visible()
        walk.shot("menu-open")
        walk.assert_fits_width("the open menu")
        audit_link.click()
        page.wait_for_url(f"{base}/audit/")
        walk.assert_fits_width()
    finally:
        walk.close()

    walk = open_as(browser, base, "n.simon@mirc.test", role="layout-dpo", size="1366x768")
    try:
        # On the laptop the menu is shown as it was, in one row, and the button is not.
        assert not walk.page.locator("[data-menu-toggle]").is_visible()
        assert walk.page.locator(".mainnav a[href='/audit/']").is_visible()
        assert walk.page.locator(".topbar").bounding_box()["height"] < 80
    finally:
        walk.close()


def test_on_a_tablet_the_queue_shows_each_requests_deadline(demo, browser):  # noqa: F811
    """The tele-expertise queue becomes one card per request, its deadline on screen."""
    base, _ids = demo
    walk = open_as(browser, base, "j.moreau@mirc.test", role="layout-expert", size="tablet")
    try:
        walk.goto("/teleexpertise/")
        rows = walk.page.locator("[data-testid=request-row]")
        assert rows.count() > 0
        width = walk.page.viewport_size["width"]
        for index in range(rows.count()):
            row = rows.nth(index)
            cells = row.locator("td")
            # Every cell on the screen, no sideways scrolling: the deadline (the 7th) first.
            for cell in [cells.nth(6)] + [cells.nth(i) for i in range(cells.count())]:
                box = cell.bounding_box()
                assert box is not None and box["width"] > 0
                assert box["x"] >= 0 and box["x"] + box["width"] <= width, (
                    f"request {row.get_attribute('data-request')}: "
                    f"{cell.get_attribute('data-label')} is off the screen"
                )
        walk.shot("queue-cards")
        walk.assert_fits_width()
    finally:
        walk.close()
