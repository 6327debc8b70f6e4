"""The documents of the higher apps in a share (imaging.shares): a signed fiche RCP and a signed
tele-expertise report, offered by rcp and expertise through their AppConfig's
``shareable_documents`` (imaging never imports them), served to the recipient by their
verified read."""

import re

from django.core import mail
from django.test import Client
from django.urls import reverse

from imaging import shares
from portal.audit import Actor
from tests.test_expertise_pdf import capture, sign, story  # noqa: F401
from tests.test_expertise_pdf import stored as stored_report
from tests.test_rcp_pdf import board, fiche  # noqa: F401
from tests.test_rcp_pdf import stored as stored_fiche


def _recipient_reads(token, capture):  # noqa: F811
    client = Client()
    mail.outbox.clear()
    with capture(execute=True):
        client.post(reverse("share-landing", args=[token]))
    code = re.search(r"\b(\d{6})\b", mail.outbox[-1].body).group(1)
    client.post(reverse("share-code", args=[token]), {"code": code})
    return client


def _share(*, user, patient, document, capture):  # noqa: F811
    [offered] = [
        item
        for item in shares.shareable_documents(user=user, patient=patient)
        if item.document == document
    ]
    with capture(execute=True):
        share, token = shares.share_create(
            patient=patient,
            studies=[],
            documents=[offered],
            recipient_name="Dr Hélène Garnier",
            recipient_email="h.garnier@chu-lyon.test",
            by=Actor(user=user),
        )
    return share, token, offered


def test_a_signed_fiche_rcp_is_shared(board, capture):  # noqa: F811
    document = fiche(board.v1)
    share, token, offered = _share(
        user=board.oncologist.user, patient=board.case.patient, document=document, capture=capture
    )
    assert offered.key == f"rcp.rcpdocument:{document.pk}"
    assert "Fiche RCP" in offered.label or "RCP form" in offered.label
    client = _recipient_reads(token, capture)
    item = share.documents.get()
    response = client.get(reverse("share-document", args=[token, item.pk]))
    assert response.status_code == 200
    assert response.content == stored_fiche(document)
    # The link on the case page leads to the share form with the fiche chosen.
    page = Client()
    page.force_login(board.oncologist.user)
    case_page = page.get(reverse("rcp-case", args=[board.case.pk])).content.decode()
    assert f"document=rcp.rcpdocument:{document.pk}" in case_page


def test_a_signed_tele_expertise_report_is_shared(story, capture):  # noqa: F811
    document = sign(story, capture)
    share, token, offered = _share(
        user=story.oncologist.user, patient=story.patient, document=document, capture=capture
    )
    assert offered.key == f"expertise.reportdocument:{document.pk}"
    client = _recipient_reads(token, capture)
    response = client.get(reverse("share-document", args=[token, share.documents.get().pk]))
    assert response.status_code == 200
    assert response.content == stored_report(document)
    # Nothing else of the request: its page stays closed to the recipient.
    request_page = client.get(reverse("expertise-request", args=[story.request.pk]))
    assert request_page.status_code == 302
