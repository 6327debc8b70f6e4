"""A share with a doctor who has no account, in Chromium against the seeded demo (issue 16).

Dr Claire Martin (c.martin) shares the initial thoracic CT of her patient, and its report,
with Dr Hélène Garnier, a radiologist outside the region, by e-mail. Dr Garnier, in a fresh
browser without an account, opens the link, receives the code (the test reads the outgoing
mail: the server writes it to a folder), sees the CT in the viewer and the report, and nothing
else. Dr Martin revokes the share: the next opening is refused, and the audit and the
patient's page show all of it.
"""

import re
import shutil
from pathlib import Path

import pytest

from tests.demo_seed import demo_env, manager
from tests.test_demo_browser import ARTIFACTS, browser, serving  # noqa: F401
from tests.test_rcp_browser import _page, _shell
from tests.waiting import on_page, wait_until

pytestmark = pytest.mark.service("chromium")

RECIPIENT = "h.garnier@chu-lyon.test"
VIEWER = "window.mircViewers[0]"
PATIENT = (
    "from demo.imaging import _patient; from imaging.models import Study;"
    "p = _patient('c.martin@mirc.test', 0);"
    "ct = Study.objects.get(patient=p, description='TDM thorax (bilan initial)');"
    "others = Study.objects.filter(patient=p).exclude(pk=ct.pk);"
    "print(p.pk, p.birth_name, ct.pk, ct.study_instance_uid,"
    " ','.join(f'{o.pk}:{o.study_instance_uid}' for o in others), sep='|')"
)


@pytest.fixture(scope="module")
def mail_server(seeded_demo, tmp_path_factory):
    """daphne serving a copy of the demo, its e-mails written as files to a folder."""
    workdir = tmp_path_factory.mktemp("share-demo") / "portal"
    shutil.copytree(seeded_demo, workdir)
    outbox = workdir / "mail"
    outbox.mkdir()
    env = {**demo_env(workdir), "EMAIL_URL": f"filemail:///{outbox}"}
    with serving(env) as base:
        yield base, manager(env), outbox


def _mails(outbox: Path) -> list[str]:
    """The messages written so far, oldest first (one file per connection)."""
    texts = []
    for path in sorted(outbox.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        texts += [part for part in path.read_text().split("-" * 79) if part.strip()]
    return texts


def _next_mail(outbox: Path, seen: int, page) -> str:
    wait_until(
        lambda: len(_mails(outbox)) > seen, timeout=10, what="the e-mail", sleep=on_page(page)
    )
    return _mails(outbox)[-1]


def test_a_ct_and_its_report_shared_with_a_doctor_outside_the_region(mail_server, browser):  # noqa: F811
    base, manage, outbox = mail_server
    patient_id, birth_name, ct_id, ct_uid, others = _shell(manage, PATIENT).split("|")
    others = [other.split(":") for other in others.split(",")]
    ARTIFACTS.mkdir(exist_ok=True)

    # Dr Martin shares the CT from the imaging dossier, its report preselected.
    martin_context, martin, errors = _page(browser, base, "c.martin@mirc.test")
    martin.goto(f"{base}/patients/{patient_id}/imagerie/")
    martin.locator(f"[data-testid=study-share][href*='study={ct_id}']").click()
    martin.wait_for_url(f"**/partage/patients/{patient_id}/nouveau/**")
    assert martin.locator(f"input[name=studies][value='{ct_id}']").is_checked()
    # Its report only, of the patient's documents.
    assert martin.locator("input[name=documents]:checked").count() == 1
    martin.fill("input[name=recipient_name]", "Dr Hélène Garnier")
    martin.fill("input[name=recipient_email]", RECIPIENT)
    martin.fill("textarea[name=note]", "Avis sur le nodule du lobe inférieur droit, merci.")
    seen = len(_mails(outbox))
    martin.click("[data-testid=share-submit]")
    martin.wait_for_url(f"{base}/patients/{patient_id}/")
    assert "Partagé avec Dr Hélène Garnier" in martin.locator(".messages").inner_text()
    link_mail = _next_mail(outbox, seen, martin)
    assert f"To: {RECIPIENT}" in link_mail
    link = re.search(r"(https?://\S+/partage/[A-Za-z0-9_-]+/)", link_mail).group(1)
    token = link.rstrip("/").rsplit("/", 1)[1]
    # The link travels, the patient does not.
    assert birth_name.upper() not in link_mail.upper() and "TDM" not in link_mail

    # Dr Garnier, without an account, in a fresh browser.
    garnier_context = browser.new_context(locale="fr-FR", viewport={"width": 1400, "height": 1000})
    garnier = garnier_context.new_page()
    garnier.on("console", lambda m: m.type == "error" and errors.append(f"garnier: {m.text}"))
    garnier.goto(f"{base}/partage/{token}/")
    landing = garnier.locator("[data-testid=share-landing]").inner_text()
    assert "Claire Martin" in landing and "h•••@chu-lyon.test" in landing
    # The link alone opens nothing.
    assert (
        garnier_context.request.get(f"{base}/partage/{token}/contenu/", max_redirects=0).status
        == 302
    )
    seen = len(_mails(outbox))
    garnier.click("[data-testid=share-send-code]")
    garnier.wait_for_url(f"**/partage/{token}/code/")
    code_mail = _next_mail(outbox, seen, garnier)
    assert birth_name.upper() not in code_mail.upper()
    code = re.search(r"\b(\d{6})\b", code_mail).group(1)
    garnier.fill("input[name=code]", code)
    garnier.click("[data-testid=share-code-submit]")
    garnier.wait_for_url(f"**/partage/{token}/contenu/")
    contents = garnier.locator("[data-testid=share-contents]").inner_text()
    assert "TDM thorax (bilan initial)" in contents
    assert garnier.locator("[data-testid=share-study]").count() == 1  # not the two others
    garnier.screenshot(path=str(ARTIFACTS / "share-contents.png"), full_page=True)
    document_url = base + garnier.locator("[data-testid=share-document]").first.get_attribute(
        "href"
    )

    # The CT in the viewer, through DICOMweb with the share's token.
    garnier.locator("[data-testid=share-study]").click()
    garnier.wait_for_url(f"**/partage/{token}/examens/{ct_id}/")
    assert "#token=" not in garnier.url  # taken from the address at once
    assert garnier.evaluate(f"{VIEWER}.ready.then(() => true)") is True
    garnier.screenshot(path=str(ARTIFACTS / "share-viewer.png"), full_page=True)

    # The report.
    report = garnier_context.request.get(document_url)
    assert report.status == 200
    assert report.headers["content-type"] in ("application/pdf",) or "Nodule" in report.text()

    # Nothing else: the patient's other studies, on the page and on DICOMweb; the record.
    other_id, other_uid = others[0]
    assert garnier_context.request.get(f"{base}/partage/{token}/examens/{other_id}/").status == 404
    assert garnier_context.request.get(f"{base}/dicomweb/studies/{other_uid}/series").status == 401
    record = garnier_context.request.get(f"{base}/patients/{patient_id}/", max_redirects=0)
    assert record.status == 302 and "/accounts/login/" in record.headers["location"]
    dossier = garnier_context.request.get(
        f"{base}/patients/{patient_id}/imagerie/", max_redirects=0
    )
    assert dossier.status == 302

    # Dr Martin learns that her colleague opened it, without the patient's name.
    martin.goto(f"{base}/notifications/")
    notice = martin.locator("ul.notifications li", has_text="Dr Hélène Garnier").first
    assert "a ouvert les documents que vous lui avez partagés" in notice.inner_text()
    # Dr Martin revokes it from the patient's page.
    martin.goto(f"{base}/patients/{patient_id}/")
    shares_panel = martin.locator("[data-testid=patient-shares]")
    assert "Dr Hélène Garnier" in shares_panel.inner_text()
    shares_panel.locator("[data-testid=share-revoke]").first.click()
    martin.fill("input[name=reason]", "Avis reçu par téléphone.")
    martin.click("[data-testid=share-revoke-confirm]")
    martin.wait_for_url(f"{base}/patients/{patient_id}/")
    panel = martin.locator("[data-testid=patient-share]").first.inner_text()
    assert "Révoqué" in panel and "ouvertures" in panel
    martin.screenshot(path=str(ARTIFACTS / "share-patient-page.png"), full_page=True)

    # The next opening is refused, with a page that says so.
    response = garnier.goto(f"{base}/partage/{token}/contenu/")
    assert response.status == 410
    assert "révoqué" in garnier.locator("[data-testid=share-ended]").inner_text()
    # The viewer's images too: the share's DICOMweb token died with it.
    assert garnier_context.request.get(f"{base}/dicomweb/studies/{ct_uid}/series").status == 401

    # The audit names the recipient on each opening of the patient's data.
    counts = _shell(
        manage,
        "from portal.models import AuditEvent;"
        f"e = AuditEvent.objects.filter(patient_id={patient_id},"
        f" actor_name__contains='{RECIPIENT}');"
        "print(e.filter(outcome=0).count(), e.filter(event_id='110103').count(),"
        " AuditEvent.objects.filter(object_type='imaging.share', detail__share='revoked').count())",
    ).split()
    openings, images, revoked = map(int, counts)
    assert openings >= 3 and images >= 1 and revoked == 1
    # The 404 of the other study is the page's own: no console error is expected from it.
    assert [e for e in errors if "404" not in e and "401" not in e and "410" not in e] == []
    garnier_context.close()
    martin_context.close()
