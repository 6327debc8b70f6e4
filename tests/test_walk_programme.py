"""The regional programme's walk (Mathilde Dumas, m.dumas@mirc.test) at the pilot's two screen
sizes: the RCP indicators of every committee with their charts, one committee chosen, the CSV
downloaded, then the tele-expertise indicators. She sits on no committee and follows no patient.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.browser_walk import SIZES, open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

PROGRAMME = "m.dumas@mirc.test"

COMMITTEES = """
import json
from pathlib import Path
from rcp.models import Committee
print(json.dumps(list(Committee.objects.order_by("name").values_list("pk", "name"))))
"""


def _committees(manage) -> list[tuple[int, str]]:
    out = manage("shell", "-c", COMMITTEES).stdout.strip().splitlines()[-1]
    return [tuple(row) for row in json.loads(out)]


@pytest.mark.parametrize("size", list(SIZES))
def test_the_programme_reads_every_committees_indicators(demo_server, browser, size):  # noqa: F811
    base, manage = demo_server
    committees = _committees(manage)
    assert len(committees) >= 2, "the demo has several committees"
    walk = open_as(browser, base, PROGRAMME, role="programme", size=size)
    page = walk.page
    try:
        # From the RCP home, though she sits on no committee.
        walk.goto("/rcp/")
        page.locator("[data-testid=rcp-indicators]").click()
        page.wait_for_url("**/rcp/indicateurs/")
        table = page.locator("[data-testid=committees]")
        for _pk, name in committees:
            assert name in table.inner_text()
        # Cases per month, one colour per committee named in the legend; quorum and sessions.
        assert page.locator("svg[data-testid=months] rect").count() >= 1
        legend = page.locator("[data-testid=months-legend]").inner_text()
        assert all(name in legend for _pk, name in committees)
        assert page.locator("[data-testid=quorum] tbody tr").count() == len(committees)
        walk.assert_fits_width("the RCP indicators of every committee")
        walk.shot("rcp-indicators-all")

        # One committee: its summary and sessions.
        pk, name = committees[0]
        page.locator("select[name=committee]").select_option(str(pk))
        page.locator("[data-testid=period] button[type=submit]").click()
        page.wait_for_url(f"**committee={pk}**")
        summary = page.locator("[data-testid=summary]")
        assert summary.is_visible()
        assert name in page.locator("main, body").first.inner_text()
        walk.assert_fits_width("one committee's indicators")
        walk.shot("rcp-indicators-one")

        # The CSV of every committee.
        walk.goto("/rcp/indicateurs/")
        with page.expect_download() as download:
            page.locator("[data-testid=csv]").click()
        path = download.value.path()
        text = Path(path).read_text(encoding="utf-8-sig")
        rows = list(csv.reader(io.StringIO(text), delimiter=";"))
        assert rows[0][0] == "RCP"
        assert sorted(row[0] for row in rows[1:]) == sorted(name for _pk, name in committees)

        # The tele-expertise indicators, every pool.
        walk.goto("/teleexpertise/indicateurs/")
        assert page.locator("[data-testid=pools] tbody tr").count() >= 2
        assert page.locator("svg[data-testid=months] rect").count() >= 1
        walk.assert_fits_width("the tele-expertise indicators")
        walk.shot("expertise-indicators")
        assert not walk.errors, walk.errors
    finally:
        walk.close()
