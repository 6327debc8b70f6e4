"""The GP's walk (Dr Pierre Lemoine, p.lemoine@mirc.test) at the pilot's two screen sizes: his
home opens on what is new for his patients, unread first; he opens the RCP decision of one of
them (read only, no form), finds it read on his home; his patients' RCP cases and decisions,
the pending case of his patient with its status (read only too); then he marks his news read.

The sizes share the module's demo: the laptop walk reads the decision, the tablet walk finds
it read and marks the rest read.
"""

from __future__ import annotations

import pytest

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

GP = "p.lemoine@mirc.test"
# Any form posting to an RCP case would be an action the GP may not take.
CASE_FORMS = "main form[action*='/rcp/dossiers/']"


def _unread_flags(page) -> list[str]:
    return page.locator("[data-testid=news-item]").evaluate_all(
        "items => items.map(item => item.dataset.unread)"
    )


def _assert_unread_first(page) -> None:
    flags = _unread_flags(page)
    assert flags, "the GP's patients have news in the demo"
    assert flags == sorted(flags, reverse=True), f"unread first: {flags}"


def _assert_read_only_case(walk, what: str) -> None:
    page = walk.page
    assert page.locator("[data-testid=case-state]").is_visible()
    assert page.locator(CASE_FORMS).count() == 0, f"{what}: a form acts on the case"
    assert page.locator("[data-testid=decision-form]").count() == 0
    walk.assert_fits_width(what)


@pytest.mark.parametrize("size", list(SIZES))
def test_the_gp_follows_his_patients_news_and_rcp_decisions(demo_server, browser, size):  # noqa: F811
    base, _manage = demo_server
    walk = open_as(browser, base, GP, role="gp", size=size)
    page = walk.page

    # His home: the news of his patients first, unread first; the tiles stay below.
    news = page.get_by_test_id("gp-news")
    assert news.is_visible()
    walk.assert_above_fold("[data-testid=gp-news] h2")
    _assert_unread_first(page)
    kinds = set(
        page.locator("[data-testid=news-item]").evaluate_all(
            "items => items.map(item => item.dataset.kind)"
        )
    )
    assert {"rcp-decision", "study"} <= kinds, kinds
    walk.assert_fits_width("home")
    walk.shot("home-news")

    decision = page.locator("[data-testid=news-item][data-kind=rcp-decision]").first
    if size == "1366x768":
        # The decision is new to him; he opens it: the validated decision, read only.
        assert decision.get_attribute("data-unread") == "1"
        decision.locator("a").click()
        page.wait_for_url("**/rcp/dossiers/*/")
        assert page.locator("[data-testid^=decision-v]").first.is_visible()
        assert (
            page.locator("[data-testid=case-state]")
            .get_attribute("class")
            .endswith("state-validated")
        )
        _assert_read_only_case(walk, "the validated decision")
        walk.shot("decision-read-only")
        # Back home: read now, below what he has not read.
        walk.goto("/")
        decision = page.locator("[data-testid=news-item][data-kind=rcp-decision]").first
        assert decision.get_attribute("data-unread") == "0"
        _assert_unread_first(page)
        return walk.close()

    # His patients' RCP cases: the pending one with its status, the decided one with its decision.
    assert decision.get_attribute("data-unread") == "0"  # read on the laptop
    page.get_by_test_id("news-link-rcp-gp-cases").click()
    page.wait_for_url("**/rcp/mes-patients/")
    table = page.get_by_test_id("gp-cases")
    assert table.is_visible()
    assert table.locator("[data-testid=gp-case-decision]").count() >= 1
    pending = table.locator("tr:has(.state-on_agenda)").first
    assert pending.is_visible(), "a case of his patient waits on an agenda in the demo"
    walk.assert_fits_width("my patients' RCP decisions")
    walk.shot("rcp-decisions")
    pending.locator("a").first.click()
    page.wait_for_url("**/rcp/dossiers/*/")
    assert (
        page.locator("[data-testid=case-state]").get_attribute("class").endswith("state-on_agenda")
    )
    _assert_read_only_case(walk, "the pending case")
    walk.shot("pending-case-read-only")

    # He marks his news read: nothing unread any more.
    walk.goto("/")
    page.get_by_test_id("news-mark-read").click()
    page.wait_for_url(f"{base}/")
    assert page.get_by_test_id("news-unread-count").count() == 0
    assert set(_unread_flags(page)) == {"0"}
    walk.shot("news-read")
    assert not walk.errors, walk.errors
    walk.close()
