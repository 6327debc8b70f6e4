"""The expert signs the report: a confirmation step with a summary, the password (and the
second factor's code) as the signature, an answer at once while Celery makes the PDF, and a
confirmation message after every tele-expertise action."""

import time
from unittest import mock

import pytest
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.urls import reverse

from expertise import services
from expertise.models import Act, Report, ReportDocument, Request
from portal.audit import Actor
from portal.documents import render_document
from portal.models import AuditEvent, AuditEventId, AuditOutcome, AuditPurpose
from tests.conftest import PASSWORD, client_for
from tests.expertise_world import REPORT, accepted_request, expertise_world, sent_request

State = Request.State


@pytest.fixture
def tele(world):
    return expertise_world(world)


def english(user):
    client = client_for(user)
    client.cookies["django_language"] = "en"
    return client


def _reported(tele) -> Request:
    """An accepted request whose report is saved, complete, not signed."""
    request = accepted_request(tele)
    services.report_save(
        request=request, by=Actor(user=tele.teleradiologist.user), revision=None, **REPORT
    )
    return request


def _sign(client, request, **data):
    revision = Report.objects.get(request=request).revision
    return client.post(
        reverse("expertise-report-sign", args=[request.pk]), {"revision": revision, **data}
    )


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_signing_starts_with_a_summary_of_what_is_signed_sent_and_billed(tele):
    request = _reported(tele)
    expert = english(tele.teleradiologist.user)
    page = expert.get(reverse("expertise-request", args=[request.pk])).content.decode()
    confirm_url = reverse("expertise-report-confirm", args=[request.pk])
    assert f'href="{confirm_url}"' in page  # the button leads to the confirmation, not a POST

    confirm = expert.get(confirm_url)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert REPORT["conclusion"] in html
    assert str(request) in html
    patient = tele.patient
    initials = f"{patient.first_names[0]}. {patient.birth_name[0]}."
    assert initials in html and patient.birth_name not in html.split("sign-summary")[1]
    assert "TE2" in html and "20.00 €" in html
    assert 'name="password"' in html and 'name="code"' not in html
    # Nothing signed by looking at it.
    assert not Report.objects.get(request=request).is_locked


def test_a_wrong_password_refuses_changes_nothing_and_is_audited(tele):
    request = _reported(tele)
    expert = english(tele.teleradiologist.user)
    response = _sign(expert, request, password="not-my-password")
    assert response.status_code == 400
    assert "The password is wrong: the report was not signed." in _messages(response)
    request.refresh_from_db()
    assert request.state == State.ACCEPTED
    assert not Report.objects.get(request=request).is_locked
    assert not Act.objects.filter(request=request).exists()
    refusal = AuditEvent.objects.filter(
        event_id=AuditEventId.USER_AUTHENTICATION,
        actor=tele.teleradiologist.user,
        object_type="expertise.request",
        object_id=str(request.pk),
    ).get()
    assert refusal.outcome == AuditOutcome.MINOR_FAILURE
    assert refusal.patient == tele.patient
    assert refusal.purpose == AuditPurpose.EXPERTISE


def test_an_empty_password_is_asked_again(tele):
    request = _reported(tele)
    response = _sign(english(tele.teleradiologist.user), request, password="")
    assert response.status_code == 400
    assert not Report.objects.get(request=request).is_locked


def test_repeated_wrong_signatures_lock_signing_for_a_while(tele):
    request = _reported(tele)
    expert = english(tele.teleradiologist.user)
    for _ in range(services.SIGNATURE_MAX_FAILURES):
        _sign(expert, request, password="guess")
    response = _sign(expert, request, password=PASSWORD)
    assert response.status_code == 400
    assert not Report.objects.get(request=request).is_locked


def _totp(user) -> str:
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


def test_an_account_with_a_second_factor_signs_with_its_code_too(tele):
    request = _reported(tele)
    secret = _totp(tele.teleradiologist.user)
    expert = english(tele.teleradiologist.user)
    confirm = expert.get(reverse("expertise-report-confirm", args=[request.pk]))
    assert 'name="code"' in confirm.content.decode()

    without_code = _sign(expert, request, password=PASSWORD)
    assert without_code.status_code == 400
    wrong_code = _sign(expert, request, password=PASSWORD, code="000000")
    assert wrong_code.status_code == 400
    assert not Report.objects.get(request=request).is_locked

    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    if code == "000000":  # one chance in a million: the wrong code above was right
        return
    signed = _sign(expert, request, password=PASSWORD, code=code)
    assert signed.status_code == 302
    assert Report.objects.get(request=request).is_locked


def test_the_page_answers_at_once_and_shows_the_pdf_progress(
    tele, django_capture_on_commit_callbacks
):
    request = _reported(tele)
    expert = english(tele.teleradiologist.user)
    # The PDF is Celery's: the signing page queues it and answers without waiting for it.
    with (
        mock.patch.object(render_document, "delay") as queued,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = _sign(expert, request, password=PASSWORD)
    assert response.status_code == 302
    document = ReportDocument.objects.get(report__request=request)
    queued.assert_called_once_with("expertise.ReportDocument", document.pk)
    assert document.status == ReportDocument.Status.PENDING  # not made by the page

    page = expert.get(response["Location"])
    assert any("Report signed" in text for text in _messages(page))
    html = page.content.decode()
    outputs_url = reverse("expertise-report-outputs", args=[request.pk])
    assert f'hx-get="{outputs_url}"' in html  # polls the fragment while in flight
    assert "Waiting" in html

    render_document("expertise.ReportDocument", document.pk)  # what the worker does
    fragment = expert.get(outputs_url).content.decode()
    assert "Ready" in fragment and 'data-testid="report-pdf-download"' in fragment
    assert "hx-get" not in fragment  # done: the polling stops


def _follow(client, url, data=None):
    return client.post(url, data or {}, follow=True)


def test_every_action_says_it_was_done(tele):
    gp = english(tele.gp.user)
    expert = english(tele.teleradiologist.user)

    request = sent_request(tele)
    claimed = _follow(expert, reverse("expertise-request-claim", args=[request.pk]))
    assert any("You accepted the request" in text for text in _messages(claimed))

    asked = _follow(
        expert, reverse("expertise-request-ask", args=[request.pk]), {"question": "Tabac ?"}
    )
    assert any("Question sent to the requester" in text for text in _messages(asked))

    given = _follow(
        gp, reverse("expertise-message-post", args=[request.pk]), {"body": "Oui, actif."}
    )
    assert any("Information given" in text for text in _messages(given))

    message = _follow(gp, reverse("expertise-message-post", args=[request.pk]), {"body": "Merci"})
    assert "Message sent." in _messages(message)

    declined = _follow(
        expert,
        reverse("expertise-request-decline", args=[request.pk]),
        {"reason": "Hors de mon champ.", "to": "requester"},
    )
    assert any("Request declined" in text for text in _messages(declined))

    redrafted = _follow(gp, reverse("expertise-request-redraft", args=[request.pk]))
    assert any("draft again" in text for text in _messages(redrafted))

    sent = _follow(gp, reverse("expertise-request-send", args=[request.pk]))
    assert any("Request sent to" in text for text in _messages(sent))

    cancelled = _follow(
        gp, reverse("expertise-request-cancel", args=[request.pk]), {"reason": "Plus utile."}
    )
    assert "Request cancelled." in _messages(cancelled)


def test_closing_says_it_was_done(tele):
    request = _reported(tele)
    _sign(english(tele.teleradiologist.user), request, password=PASSWORD)
    closed = _follow(
        english(tele.gp.user),
        reverse("expertise-request-close", args=[request.pk]),
        {"outcome": "exam_avoided"},
    )
    assert any("Request closed" in text for text in _messages(closed))


def test_the_confirmation_page_reads_a_bounded_number_of_queries(
    tele, django_assert_max_num_queries
):
    request = _reported(tele)
    expert = english(tele.teleradiologist.user)
    url = reverse("expertise-report-confirm", args=[request.pk])
    expert.get(url)  # the session and the caches are warm
    with django_assert_max_num_queries(16):
        assert expert.get(url).status_code == 200
