"""The demo as a new user meets it: daphne serving the seeded portal, driven in Chromium.

Starts the real ASGI server on a free loopback port with its own copy of the demo (SQLite,
archive and media, after ``migrate`` and ``seed_demo`` as ``make demo`` runs them: see
tests/demo_seed.py), then signs in through the browser.
Needs Debian's Chromium (/usr/bin/chromium); Playwright never downloads a browser.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.demo_seed import demo_env, manager
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEMO_PASSWORD = "mirc-demo-2026"
ARTIFACTS = ROOT / "test-artifacts"
SERVER_START = 60.0  # seconds for daphne to load the portal and answer, on a busy machine

pytestmark = pytest.mark.service("chromium")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(env: dict):
    """daphne serving the demo folder ``env`` points at (tests/demo_seed.demo_env), on a free
    port, until the block ends; yields its base URL once /health/ answers."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "portal.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if server.poll() is not None:
            pytest.fail("daphne did not start: " + server.stderr.read1().decode())
        try:
            urllib.request.urlopen(f"{base}/health/", timeout=1).close()  # noqa: S310
        except OSError:
            return False
        return True

    try:
        wait_until(answers, timeout=SERVER_START, what=f"daphne to answer {base}/health/")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def demo_server(seeded_demo, tmp_path_factory):
    """daphne serving this module's own copy of the seeded demo (see tests/demo_seed.py)."""
    workdir = tmp_path_factory.mktemp("demo") / "portal"
    shutil.copytree(seeded_demo, workdir)
    env = demo_env(workdir)
    with serving(env) as base:
        yield base, manager(env)


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        require_service("Chromium", f"{CHROMIUM} not found")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def _sign_in(page, base, email):
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("main button[type=submit]")


def test_a_doctor_signs_in_and_finds_her_patients(demo_server, browser):
    base, _manage = demo_server
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    _sign_in(page, base, "c.martin@mirc.test")
    page.wait_for_url(f"{base}/")
    assert "Claire Martin" in page.inner_text("header")

    page.goto(f"{base}/patients/")
    rows = page.locator("table tbody tr")
    assert rows.count() >= 10
    total = rows.count()
    surname = rows.nth(3).locator("a").inner_text().split()[0]
    # Live search (htmx): typed in lower case, without waiting for a submit.
    page.fill("input[name=q]", surname.lower())
    page.wait_for_function(
        "n => document.querySelectorAll('#patient-results tbody tr').length < n", arg=total
    )
    link = page.locator("#patient-results tbody tr a").first
    assert link.inner_text().startswith(surname)
    response = page.goto(f"{base}{link.get_attribute('href')}")
    assert "no-store" in response.headers["cache-control"]
    assert page.locator(".patient-banner h1").inner_text().startswith(surname)
    assert page.locator(".people li").count() >= 2  # the care team
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-patient-page.png"), full_page=True)
    assert not errors, errors
    context.close()


def test_the_administrator_needs_the_totp_code(demo_server, browser):
    base, manage = demo_server
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, base, "admin@mirc.test")
    page.wait_for_url(f"{base}/accounts/2fa/authenticate/")
    code = manage("demo_totp", "admin@mirc.test").stdout.strip()
    page.fill("input[name=code]", code)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert page.locator("a[href='/admin/']").count() == 1
    # An administrator is not a carer: no patient is visible.
    page.goto(f"{base}/patients/")
    assert page.locator("table tbody tr").count() == 0
    context.close()


def test_a_radiologist_cannot_open_a_patient_he_does_not_follow(demo_server, browser):
    base, _manage = demo_server
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, base, "p.lefevre@mirc.test")
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/patients/")
    mine = set(
        page.locator("#patient-results tbody tr a").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
    )
    foreign = next(f"/patients/{n}/" for n in range(1, 60) if f"/patients/{n}/" not in mine)
    response = page.goto(f"{base}{foreign}")
    assert response.status == 404
    context.close()


def test_a_doctor_opens_the_imaging_dossier_and_imports_a_cd(demo_server, browser, tmp_path):
    import datetime as dt
    import types

    from tests.dicom_factory import ct_files

    base, _manage = demo_server
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    _sign_in(page, base, "c.martin@mirc.test")
    page.wait_for_url(f"{base}/")
    # The imaging page lists the recent studies of her patients: open one patient's dossier.
    page.goto(f"{base}/imagerie/")
    page.locator("table tbody tr a").first.click()
    page.wait_for_selector("ul.studies")
    page.locator(".crumbs a").nth(1).click()  # the patient's page: traits and IPP
    page.wait_for_selector(".patient-banner")
    traits = dict(
        zip(
            page.locator("dl.traits dt").all_inner_texts(),
            page.locator("dl.traits dd").all_inner_texts(),
            strict=False,
        )
    )
    ipp = page.locator("table.table tbody tr td").first.inner_text().strip()
    patient = types.SimpleNamespace(
        birth_name=traits["Nom de naissance"],
        first_names=traits["Prénoms"],
        # The birth date reads "12/03/1960 (66 ans)": its first word is the date.
        birth_date=dt.datetime.strptime(  # noqa: DTZ007
            traits["Date de naissance"].split()[0], "%d/%m/%Y"
        ).date(),
        sex={"Masculin": "M", "Féminin": "F"}.get(traits["Sexe"], "I"),
    )
    page.click("text=Dossier d'imagerie")
    page.wait_for_selector("ul.studies")
    # Seeded studies from several establishments, with thumbnails, newest first.
    assert page.locator("li.study").count() >= 2
    assert page.locator("li.study img[src^='data:image/png']").count() >= 2

    folder = tmp_path / "cd"
    folder.mkdir()
    for number, data in enumerate(
        ct_files(patient, key="browser-cd", slices=3, ipp=ipp, description="TDM apporté")
    ):
        (folder / f"IM{number}").write_bytes(data)
    (folder / "LISEZMOI.txt").write_text("CD patient")
    page.set_input_files(
        "input[name=files]:not([webkitdirectory])", sorted(str(p) for p in folder.iterdir())
    )
    page.click("section.upload button[type=submit]")
    page.wait_for_url("**/imagerie/import/*/")
    page.wait_for_selector("tr.item-accepted", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "imaging-import.png"), full_page=True)
    assert page.locator("tr.item-accepted").count() == 3
    refused = page.locator("tr.item-rejected")
    assert refused.count() == 1
    assert "DICM" in refused.inner_text()
    page.click("text=Retour au dossier d'imagerie")
    assert page.locator("li.study h3", has_text="TDM apporté").count() == 1
    context.close()
