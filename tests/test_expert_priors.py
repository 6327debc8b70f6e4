"""The remote radiologist reads the patient's priors while the request is theirs.

From the claim until the report is signed (or the request leaves them), the expert opens the
patient's imaging dossier across establishments and its studies in the viewer, read only,
audited for the tele-expertise against the patient; before and after, 404 like any outsider.
A colleague of the pool who did not claim it sees nothing of the priors.
"""

import re
from html import unescape

import pytest
from django.urls import reverse

from expertise import services
from imaging.models import Study
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditPurpose
from portal.selectors import access_generation
from tests.conftest import client_for
from tests.expertise_world import REPORT, expertise_world, sent_request
from tests.permission_matrix import imaged_study
from tests.test_i18n import catalogues, compiled_locale  # noqa: F401 - fixtures


@pytest.fixture
def tele(world):
    expertise_world(world)
    # A prior of the same patient made at another establishment, not attached to the request.
    prior = imaged_study(world, key="prior-bourges")["study"]
    Study.objects.filter(pk=prior.pk).update(establishment=world.bourges)
    world.prior = Study.objects.get(pk=prior.pk)
    world.request = sent_request(world)
    return world


def _dossier(w):
    return reverse("imaging-dossier", args=[w.patient.pk])


def _viewer(study):
    return reverse("study-viewer", args=[study.pk])


def _href(url):
    return f'href="{url}"'


def _claim(w):
    return services.request_claim(request=w.request, by=Actor(user=w.teleradiologist.user))


def _sign(w):
    expert = Actor(user=w.teleradiologist.user)
    report = services.report_save(request=w.request, by=expert, revision=None, **REPORT)
    services.report_sign_and_send(request=w.request, by=expert, revision=report.revision)


def test_before_the_claim_the_expert_does_not_see_the_priors(tele):
    expert = client_for(tele.teleradiologist.user)
    assert expert.get(_dossier(tele)).status_code == 404
    assert expert.get(_viewer(tele.prior)).status_code == 404


def test_the_claiming_expert_reads_the_dossier_and_the_priors_read_only(tele):
    _claim(tele)
    expert = client_for(tele.teleradiologist.user)
    before = AuditEvent.objects.count()

    page = expert.get(_dossier(tele))
    assert page.status_code == 200
    html = page.content.decode()
    assert tele.bourges.name in html  # the prior of the other establishment is listed
    assert 'data-testid="read-only"' in html
    assert reverse("study-upload", args=[tele.patient.pk]) not in html
    assert reverse("viewer-link-create", args=[tele.prior.pk]) not in html
    # The patient's record (care team, RCP) stays closed: its name is not a link.
    assert _href(reverse("patient-detail", args=[tele.patient.pk])) not in html

    viewer = expert.get(_viewer(tele.prior))
    assert viewer.status_code == 200
    assert reverse("review-room-create", args=[tele.prior.pk]) not in viewer.content.decode()

    reads = AuditEvent.objects.filter(pk__gt=before, actor=tele.teleradiologist.user)
    dossier_read = reads.get(event_id=AuditEventId.PATIENT_RECORD, object_type="portal.patient")
    assert dossier_read.purpose == AuditPurpose.EXPERTISE
    assert dossier_read.patient == tele.patient
    viewer_read = reads.get(event_id=AuditEventId.INSTANCES_ACCESSED, object_id=str(tele.prior.pk))
    assert viewer_read.purpose == AuditPurpose.EXPERTISE
    assert viewer_read.patient == tele.patient


def test_reading_does_not_open_any_change(tele):
    _claim(tele)
    expert = client_for(tele.teleradiologist.user)
    upload = expert.post(reverse("study-upload", args=[tele.patient.pk]), {})
    assert upload.status_code == 404
    assert expert.get(reverse("patient-detail", args=[tele.patient.pk])).status_code == 404
    link = expert.post(reverse("viewer-link-create", args=[tele.prior.pk]))
    assert link.status_code == 404
    room = expert.post(reverse("review-room-create", args=[tele.prior.pk]), {"title": "x"})
    assert room.status_code == 404


def test_a_colleague_of_the_pool_who_did_not_claim_gets_404(tele):
    _claim(tele)
    colleague = client_for(tele.second_radiologist.user)
    assert colleague.get(_dossier(tele)).status_code == 404
    assert colleague.get(_viewer(tele.prior)).status_code == 404


def test_the_access_ends_when_the_report_is_signed(tele):
    _claim(tele)
    expert = client_for(tele.teleradiologist.user)
    assert expert.get(_dossier(tele)).status_code == 200
    generation = access_generation(tele.teleradiologist.user.pk)

    _sign(tele)

    # Cached grants (DICOMweb, live review) are forgotten with it.
    assert access_generation(tele.teleradiologist.user.pk) != generation
    assert expert.get(_dossier(tele)).status_code == 404
    assert expert.get(_viewer(tele.prior)).status_code == 404


@pytest.mark.parametrize("leave", ["decline", "cancel"])
def test_the_access_ends_when_the_request_leaves_the_expert(tele, leave):
    _claim(tele)
    if leave == "decline":
        services.request_decline(
            request=tele.request,
            by=Actor(user=tele.teleradiologist.user),
            reason="Hors de mon champ.",
            to=services.DeclineTo.POOL,
        )
    else:
        services.request_cancel(
            request=tele.request, by=Actor(user=tele.gp.user), reason="Plus nécessaire."
        )
    expert = client_for(tele.teleradiologist.user)
    assert expert.get(_dossier(tele)).status_code == 404
    assert expert.get(_viewer(tele.prior)).status_code == 404


def test_the_expert_viewer_breadcrumbs_lead_only_where_the_expert_may_go(tele):
    _claim(tele)
    expert = client_for(tele.teleradiologist.user)
    html = expert.get(_viewer(tele.prior)).content.decode()
    assert _href(reverse("patient-detail", args=[tele.patient.pk])) not in html
    assert _dossier(tele) in html
    # The care team keeps both links.
    care = client_for(tele.gp.user).get(_viewer(tele.prior)).content.decode()
    assert _href(reverse("patient-detail", args=[tele.patient.pk])) in care
    assert _href(_dossier(tele)) in care


HREF = re.compile(r'<a\b[^>]*\bhref="(/[^"#]*)"')


def _internal_links(html: str) -> set[str]:
    """Every link of the page to the portal itself (not its static files, not sign-out)."""
    return {
        unescape(href)
        for href in HREF.findall(html)
        if not href.startswith(("/static/", "/accounts/logout", "/comptes/"))
    }


@pytest.mark.parametrize("who", ["teleradiologist", "pool_coordinator"])
def test_every_link_of_the_pages_the_expert_walks_leads_somewhere(tele, who):
    _claim(tele)
    user = getattr(tele, who).user
    client = client_for(user)
    pages = [reverse("expertise-request", args=[tele.request.pk])]
    if who == "teleradiologist":
        pages += [_dossier(tele), _viewer(tele.prior), _viewer(tele.ct)]
    seen = {}
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        for link in _internal_links(response.content.decode()):
            if link not in seen:
                seen[link] = client.get(link).status_code
    broken = {link: status for link, status in seen.items() if status in (403, 404)}
    assert not broken, f"{who} meets dead links: {broken}"
    assert len(seen) > 3  # the walk did find links


def test_the_viewer_loads_the_priors_images_only_while_the_request_is_claimed(tele):
    """The viewer's images come through DICOMweb, which follows the same grant."""
    url = reverse("dicomweb-study-metadata", args=[tele.prior.study_instance_uid])
    expert = client_for(tele.teleradiologist.user)
    assert expert.get(url).status_code == 404
    _claim(tele)
    services.request_ask_information(
        request=tele.request, by=Actor(user=tele.teleradiologist.user), question="Tabac ?"
    )
    # Waiting for the requester's answer, the request is still the expert's.
    assert expert.get(url).status_code == 200
    assert expert.get(_dossier(tele)).status_code == 200
    services.message_post(request=tele.request, by=Actor(user=tele.gp.user), body="Oui.")
    _sign(tele)
    assert expert.get(url).status_code == 404


@pytest.mark.usefixtures("catalogues")
def test_the_expert_goes_back_from_the_priors_to_the_request_he_answers(tele):
    _claim(tele)
    expert = client_for(tele.teleradiologist.user)
    back = _href(reverse("expertise-request", args=[tele.request.pk]))
    for page in (_dossier(tele), _viewer(tele.prior)):
        html = expert.get(page).content.decode()
        assert back in html, page
        assert f"Retour à la demande n° {tele.request.pk}" in html, page
    # The care team reads the same pages for care: no request to go back to.
    care = client_for(tele.gp.user)
    for page in (_dossier(tele), _viewer(tele.prior)):
        assert 'data-testid="access-reason"' not in care.get(page).content.decode(), page


def test_the_way_back_goes_when_the_request_is_answered(tele):
    _claim(tele)
    _sign(tele)
    # The request's attached study stays open to its expert; the grant, and its link, are gone.
    html = client_for(tele.teleradiologist.user).get(_viewer(tele.ct)).content.decode()
    assert 'data-testid="access-reason"' not in html
