"""The administration pages in a browser, on the seeded demo: the regional administrator
(j.perrin) edits an establishment's contacts and grants a role; the administrator of CHR
d'Orléans (k.haddad) adds a doctor found in the directory and gives a colleague a role there,
on a tablet. Screenshots go to test-artifacts/ (walk-admin-<role>-<size>-…)."""

import json

import pytest

from tests.browser_walk import open_as
from tests.test_demo_browser import browser, demo_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.service("chromium")

# A doctor of the national directory with no account in the demo (test RPPS range 997…).
DIRECTORY_PERSON = """
import json
from portal.directory_models import DirectoryPerson
from portal.identifiers import luhn_complete
rpps = luhn_complete("9970077701")
DirectoryPerson.objects.get_or_create(
    national_id="8" + rpps,
    defaults=dict(
        id_type="8", rpps=rpps, civility="DR", first_name="ROSE", last_name="VALLIER",
        profession_code="10", profession_label="Médecin", specialty="pneumologie",
        specialty_label="Pneumologie",
    ),
)
from portal.models import Establishment
print(json.dumps({"orleans": Establishment.objects.get(finess="450000088").pk,
                  "bourges": Establishment.objects.get(finess="180000028").pk}))
"""


@pytest.fixture(scope="module")
def demo(demo_server):  # noqa: F811
    base, manage = demo_server
    ids = json.loads(manage("shell", "-c", DIRECTORY_PERSON).stdout.strip().splitlines()[-1])
    return base, ids


def test_the_regional_administrator_edits_an_establishment_and_grants_a_role(demo, browser):  # noqa: F811
    base, ids = demo
    walk = open_as(browser, base, "j.perrin@mirc.test", role="admin-regional", size="1366x768")
    page = walk.page
    try:
        page.locator(".mainnav a[href='/administration/']").click()
        page.wait_for_url(f"{base}/administration/")
        table = page.locator("[data-testid=administered-establishments]")
        assert table.locator("tbody tr").count() >= 6
        walk.shot("establishments")
        walk.assert_fits_width()

        walk.goto(f"/administration/etablissements/{ids['bourges']}/")
        page.fill("input[name=contact_phone]", "02 48 48 48 48")
        page.locator("main form button[type=submit]").click()
        page.wait_for_url(f"{base}/administration/etablissements/{ids['bourges']}/")
        assert "enregistré" in page.inner_text("main")
        assert page.input_value("input[name=contact_phone]") == "02 48 48 48 48"

        walk.goto("/administration/roles/")
        assert "Nathalie Simon" in page.locator("[data-testid=role-data_protection]").inner_text()
        page.select_option("select[name=role]", "programme")
        page.locator("form[method=get] button", has_text="Choisir").click()
        page.wait_for_url("**/administration/roles/?role=programme")
        page.fill("input[name=email]", "c.martin@mirc.test")
        page.locator("main form[method=post] button", has_text="Attribuer le rôle").last.click()
        page.wait_for_url(f"{base}/administration/roles/")
        assert "a désormais le rôle" in page.inner_text("main")
        assert "Claire Martin" in page.locator("[data-testid=role-programme]").inner_text()
        walk.shot("roles")
        walk.assert_fits_width()
        assert not walk.errors, walk.errors
    finally:
        walk.close()


def test_an_establishment_administrator_manages_their_professionals_on_a_tablet(demo, browser):  # noqa: F811
    base, ids = demo
    walk = open_as(browser, base, "k.haddad@mirc.test", role="admin-orleans", size="tablet")
    page = walk.page
    try:
        walk.goto("/administration/")
        rows = page.locator("[data-testid=administered-establishments] tbody tr")
        assert rows.count() == 1 and "Orléans" in rows.first.inner_text()
        rows.first.locator("a", has_text="Professionnels").click()
        page.wait_for_url(f"{base}/administration/etablissements/{ids['orleans']}/professionnels/")
        listed = page.locator("[data-testid=establishment-professionals]")
        assert "Faure" in listed.inner_text()

        # A doctor of the directory, without an account: found by name, added.
        page.fill("input[name=q]", "vallier")
        page.locator("[role=search] button").click()
        page.locator("[data-testid=directory-results]").wait_for()
        page.locator("[data-testid=directory-results] button").first.click()
        page.wait_for_url(f"{base}/administration/etablissements/{ids['orleans']}/professionnels/")
        assert "VALLIER" in listed.inner_text().upper()

        # A colleague becomes the billing office there.
        row = listed.locator("tr", has_text="Faure")
        row.locator("button", has_text="Facturation").click()
        page.wait_for_url(f"{base}/administration/etablissements/{ids['orleans']}/professionnels/")
        assert "a désormais le rôle" in page.inner_text("main")
        walk.shot("professionals")
        walk.assert_fits_width()

        assert not walk.errors, walk.errors

        # Another establishment's page: not found, like a missing one.
        response = page.goto(
            f"{base}/administration/etablissements/{ids['bourges']}/professionnels/"
        )
        assert response.status == 404
    finally:
        walk.close()
