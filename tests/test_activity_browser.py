"""The programme's imaging indicators in Chromium against the seeded demo: Chart.js (the Vite
build's charts.js, no CDN) draws the charts under the portal's CSP.

Reuses the demo server of tests/test_demo_browser.py (its seed computes the indicators) and
its Chromium; without the build in static/build/ the test is skipped, or fails under
REQUIRE_SERVICES=1.
"""

import pytest

from tests.conftest import require_service
from tests.test_demo_browser import ROOT, _sign_in, browser, demo_server  # noqa: F401
from tests.waiting import on_page, wait_until

pytestmark = pytest.mark.service("chromium")

# Pixels of the canvas that are not transparent: the bars, the axes and their labels drawn.
PAINTED = """(() => {
  const canvas = document.querySelector('canvas[data-chart="chart-archived"]');
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) painted += 1;
  return painted;
})()"""


def test_the_programme_sees_the_charts_drawn(demo_server, browser):  # noqa: F811
    if not (ROOT / "static" / "build" / "charts.js").exists():
        require_service(
            "charts build", "static/build/charts.js missing: cd frontend && npm run build"
        )
    base, _manage = demo_server
    context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        _sign_in(page, base, "m.dumas@mirc.test")
        page.wait_for_url(f"{base}/")
        page.click("[data-testid=activity-link]")
        page.wait_for_url(f"{base}/imagerie/indicateurs/")
        # The demo's studies were archived when it was seeded: this month's figures.
        assert page.locator("[data-testid=activity-table-archived] [data-testid=region]").count()
        painted = wait_until(
            lambda: page.evaluate(PAINTED),
            timeout=10,
            what="the archived studies' chart drawn",
            sleep=on_page(page),
        )
        assert painted > 500
        # Every table's chart drew (seven tables since the city doctors' one).
        charts = page.locator("canvas[data-chart]").count()
        assert charts >= 7
        assert page.locator("canvas[data-chart-drawn=true]").count() == charts
        # The demo's past year (demo/activity.py): the region's repeat exams of each kind
        # over the default twelve months (columns: no prior, prior consulted, possibly
        # redundant), the numbers as the page prints them.
        region = page.locator("[data-testid=activity-table-repeats] tr[data-testid=region]")
        assert region.count() >= 10
        totals = [0, 0, 0]
        for row in region.all():
            cells = row.locator("td").all_inner_texts()[1:4]
            for index, text in enumerate(cells):
                digits = "".join(c for c in text if c.isdigit())
                totals[index] += int(digits or 0)
        assert all(totals), totals
        assert errors == []
    finally:
        context.close()
