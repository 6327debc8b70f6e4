"""The tele-expertise pages as their users meet them: forms, lists, the request's page."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from expertise import services
from expertise.models import Attachment, Request
from portal.audit import Actor
from tests.conftest import PASSWORD, client_for
from tests.expertise_world import (
    QUESTION,
    REPORT,
    accepted_request,
    answered_request,
    draft_request,
    expertise_world,
    jpeg_upload,
    sent_request,
)
from tests.permission_matrix import imaged_study

State = Request.State


@pytest.fixture
def tele(world):
    return expertise_world(world)


def english(user):
    """A signed-in client reading the pages in English (the tests assert English text)."""
    client = client_for(user)
    client.cookies["django_language"] = "en"
    return client


def _form(tele, **overrides):
    data = {
        "pool": tele.teleradiology.pk,
        "expert": "",
        "urgency": "priority",
        "question": QUESTION,
        "clinical_context": "Fumeur.",
        "studies": [tele.ct.pk],
        "patient_informed": "on",
        "consent_date": "2026-11-20",
        "consent_method": "oral",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_the_gp_writes_a_request_from_the_patient_record_and_sends_it(tele):
    gp = english(tele.gp.user)
    record = gp.get(reverse("patient-detail", args=[tele.patient.pk]))
    create_url = reverse("expertise-request-create", args=[tele.patient.pk])
    assert create_url in record.content.decode()

    form = gp.get(create_url).content.decode()
    # The form says what each specialty needs, and offers the patient's CT.
    assert "needs at least one imaging study" in form
    assert tele.ct.description in form

    response = gp.post(create_url, _form(tele))
    request = Request.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("expertise-request", args=[request.pk])
    assert request.state == State.DRAFT and list(request.studies.all()) == [tele.ct]

    page = gp.get(response["Location"]).content.decode()
    assert QUESTION.split(":")[0] in page and 'data-testid="send-request"' in page
    gp.post(reverse("expertise-request-send", args=[request.pk]))
    request.refresh_from_db()
    assert request.state == State.SENT


def test_an_invalid_form_says_why_and_creates_nothing(tele):
    gp = english(tele.gp.user)
    url = reverse("expertise-request-create", args=[tele.patient.pk])
    response = gp.post(url, _form(tele, question="", consent_date="2999-01-01"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "The consent date cannot be in the future." in page
    assert not Request.objects.exists()
    # An expert of another pool than the one chosen.
    response = gp.post(url, _form(tele, expert=tele.outsider.user.pk))
    assert response.status_code == 400
    assert not Request.objects.exists()


def test_a_dermatology_request_takes_its_photo_with_the_form(tele):
    gp = english(tele.gp.user)
    data = _form(tele, pool=tele.dermatology.pk, studies=None)
    data.update({"file-kind": "photo", "file-title": "Lésion dorsale", "file-file": jpeg_upload()})
    gp.post(reverse("expertise-request-create", args=[tele.patient.pk]), data)
    request = Request.objects.get()
    assert request.attachments.get().kind == Attachment.Kind.PHOTO
    assert services.request_missing(request) == []
    download = gp.get(
        reverse("expertise-attachment", args=[request.pk, request.attachments.get().pk])
    )
    assert download.status_code == 200 and download["Content-Type"] == "image/jpeg"


def test_a_stale_draft_edit_is_refused_with_a_message(tele):
    request = draft_request(tele)
    gp = english(tele.gp.user)
    url = reverse("expertise-request-edit", args=[request.pk])
    seen = request.revision
    assert gp.post(url, _form(tele, revision=seen, question="v2")).status_code == 302
    response = gp.post(url, _form(tele, revision=seen, question="v3"))
    assert response.status_code == 409
    assert "Somebody changed this request" in response.content.decode()
    request.refresh_from_db()
    assert request.question == "v2"


def test_a_refused_step_is_a_message_not_an_error(tele):
    request = draft_request(tele)
    Request.objects.filter(pk=request.pk).update(patient_informed=False)
    gp = english(tele.gp.user)
    response = gp.post(reverse("expertise-request-send", args=[request.pk]), follow=True)
    assert response.status_code == 200
    assert "cannot be sent yet" in response.content.decode()
    assert Request.objects.get(pk=request.pk).state == State.DRAFT


def test_the_expert_claims_asks_reads_the_answer_and_signs(tele):
    request = sent_request(tele)
    expert = english(tele.teleradiologist.user)
    home = expert.get(reverse("expertise-home")).content.decode()
    assert f'data-request="{request.pk}"' in home

    expert.post(reverse("expertise-request-claim", args=[request.pk]))
    expert.post(reverse("expertise-request-ask", args=[request.pk]), {"question": "Tabac actif ?"})
    request.refresh_from_db()
    assert request.state == State.INFO_REQUESTED

    gp = english(tele.gp.user)
    page = gp.get(reverse("expertise-request", args=[request.pk])).content.decode()
    assert "Tabac actif ?" in page and "Answer the expert" in page
    gp.post(reverse("expertise-message-post", args=[request.pk]), {"body": "Oui, actif."})
    request.refresh_from_db()
    assert request.state == State.ACCEPTED

    expert.post(reverse("expertise-report-save", args=[request.pk]), {**REPORT, "revision": ""})
    revision = request.report.revision
    confirm = expert.get(reverse("expertise-report-confirm", args=[request.pk]))
    assert REPORT["conclusion"] in confirm.content.decode()
    expert.post(
        reverse("expertise-report-sign", args=[request.pk]),
        {"revision": revision, "password": PASSWORD},
    )
    request.refresh_from_db()
    assert request.state == State.ANSWERED
    page = gp.get(reverse("expertise-request", args=[request.pk])).content.decode()
    assert REPORT["conclusion"] in page and 'data-testid="close-request"' in page
    gp.post(reverse("expertise-request-close", args=[request.pk]), {"outcome": "exam_avoided"})
    assert Request.objects.get(pk=request.pk).state == State.CLOSED


def test_the_expert_is_warned_when_the_patient_has_four_acts_this_year(tele):
    for _ in range(4):
        answered_request(tele)
    request = accepted_request(tele)
    page = english(tele.teleradiologist.user).get(reverse("expertise-request", args=[request.pk]))
    assert 'data-testid="annual-limit"' in page.content.decode()
    other = sent_request(tele)
    page = english(tele.second_radiologist.user).get(reverse("expertise-request", args=[other.pk]))
    assert 'data-testid="annual-limit"' not in page.content.decode()


def test_declined_back_to_the_pool_the_expert_is_sent_to_the_list(tele):
    request = accepted_request(tele, expert=tele.teleradiologist.user)
    response = english(tele.teleradiologist.user).post(
        reverse("expertise-request-decline", args=[request.pk]),
        {"reason": "Absente demain", "to": "pool"},
    )
    assert response.status_code == 302
    request.refresh_from_db()
    assert request.state == State.SENT and request.expert is None


def test_the_expert_opens_a_live_review_with_the_requester(tele):
    request = accepted_request(tele)
    response = english(tele.teleradiologist.user).post(
        reverse("expertise-review-start", args=[request.pk]), {"study": tele.ct.pk}
    )
    request.refresh_from_db()
    room = request.review_room
    assert response["Location"] == reverse("review-room", args=[room.pk])
    # The requester is invited, and the request's page leads there.
    joined = english(tele.gp.user).get(reverse("review-room", args=[room.pk]))
    assert joined.status_code == 200
    page = english(tele.gp.user).get(reverse("expertise-request", args=[request.pk]))
    assert reverse("review-room", args=[room.pk]) in page.content.decode()
    # Once answered, the room closes.
    expert = Actor(user=tele.teleradiologist.user)
    report = services.report_save(request=request, by=expert, revision=None, **REPORT)
    services.report_sign_and_send(request=request, by=expert, revision=report.revision)
    assert english(tele.gp.user).get(reverse("review-room", args=[room.pk])).status_code == 404


def test_answering_the_request_puts_everyone_out_of_its_review_room(
    tele, django_capture_on_commit_callbacks, settings
):
    """The room closes as any room does: the presenter's copy the relay path trusts says
    nobody presents any more, and every connection in the room is told to leave."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.core.cache import cache

    from imaging import review

    # The listener below lives across this test's event loops (one per async_to_sync): the
    # in-process layer keeps its queue between them, where the production publish/subscribe
    # layer's subscriptions belong to one loop (a room's closing on that layer, with real
    # connections: tests/test_review_relay.py).
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    request = accepted_request(tele)
    english(tele.teleradiologist.user).post(
        reverse("expertise-review-start", args=[request.pk]), {"study": tele.ct.pk}
    )
    request.refresh_from_db()
    room = request.review_room
    # The expert has taken control and presents.
    type(room).objects.filter(pk=room.pk).update(presenter=tele.teleradiologist.user)
    review.presenter_mirror_refresh(room.pk)
    assert cache.get(review._key(room.pk, "presenter")) == tele.teleradiologist.user.pk
    layer = get_channel_layer()
    listener = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(review.room_group_name(room.pk), listener)

    expert = Actor(user=tele.teleradiologist.user)
    report = services.report_save(request=request, by=expert, revision=None, **REPORT)
    with django_capture_on_commit_callbacks(execute=True):
        services.report_sign_and_send(request=request, by=expert, revision=report.revision)

    assert cache.get(review._key(room.pk, "presenter")) == review.NOBODY
    assert async_to_sync(layer.receive)(listener) == {"type": "review.closed"}


def test_a_study_not_attached_to_the_request_cannot_be_reviewed(tele):
    other_ct = imaged_study(tele, key="other-ct")["study"]
    request = draft_request(tele, with_ct=False)
    services.request_update(
        request=request, revision=request.revision, by=Actor(user=tele.gp.user), studies=[other_ct]
    )
    services.request_send(request=request, by=Actor(user=tele.gp.user))
    services.request_claim(request=request, by=Actor(user=tele.teleradiologist.user))
    response = english(tele.teleradiologist.user).post(
        reverse("expertise-review-start", args=[request.pk]), {"study": tele.ct.pk}
    )
    assert response.status_code == 302
    assert Request.objects.get(pk=request.pk).review_room is None


def _lists(client, tele):
    with CaptureQueriesContext(connection) as queries:
        for url in (
            reverse("expertise-home"),
            reverse("expertise-home") + "?state=sent",
        ):
            assert client.get(url).status_code == 200
    return len(queries)


def test_lists_cost_the_same_queries_for_3_or_12_requests(tele):
    for _ in range(3):
        sent_request(tele)
    expert, gp = english(tele.teleradiologist.user), english(tele.gp.user)
    coordinator = english(tele.pool_coordinator.user)
    board = reverse("expertise-pool", args=[tele.teleradiology.pk])
    few = (_lists(expert, tele), _lists(gp, tele), len_queries(coordinator, board))
    for _ in range(9):
        accepted_request(tele)
    many = (_lists(expert, tele), _lists(gp, tele), len_queries(coordinator, board))
    assert few == many


def len_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_board_shows_the_pool_and_its_delays(tele):
    request = sent_request(tele, urgency="urgent")
    Request.objects.filter(pk=request.pk).update(due_at=request.sent_at)  # overdue
    answered = answered_request(tele)
    Request.objects.filter(pk=answered.pk).update(
        answered_at=answered.sent_at + dt.timedelta(hours=21, minutes=30)
    )
    coordinator = english(tele.pool_coordinator.user)
    board = reverse("expertise-pool", args=[tele.teleradiology.pk])
    html = coordinator.get(board).content.decode()
    assert f'data-request="{request.pk}"' in html and 'data-testid="overdue"' in html
    html = coordinator.get(board + "?state=answered").content.decode()
    assert f'data-request="{answered.pk}"' in html and "answered in 21.5 h" in html


def test_pages_speak_french_first(tele):
    request = accepted_request(tele)
    client = client_for(tele.teleradiologist.user)
    html = client.get(reverse("expertise-request", args=[request.pk])).content.decode()
    assert "Accepté" in html or "Acceptée" in html
    assert "Demander des précisions au requérant" in html
    client.cookies["django_language"] = "en"
    html = client.get(reverse("expertise-request", args=[request.pk])).content.decode()
    assert "Ask the requester for more information" in html


# --- The request form: named experts, urgency, delays, dates ------------------------------------


def _expert_select(html: str) -> str:
    start = html.index('name="expert"')
    return html[start : html.index("</select>", start)]


def test_the_named_expert_of_another_specialty_is_refused_and_not_offered(tele):
    gp = english(tele.gp.user)
    create_url = reverse("expertise-request-create", args=[tele.patient.pk])
    dermatologist = f'value="{tele.dermatologist.user.pk}"'
    teleradiologist = f'value="{tele.teleradiologist.user.pk}"'

    # Before a pool is chosen, each expert is listed under their pool's name.
    experts = _expert_select(gp.get(create_url).content.decode())
    dermatology = experts.index('<optgroup label="Dermatology · Dermatologie — CHRU de Tours">')
    assert experts.index(dermatologist) > dermatology
    assert experts.index(teleradiologist) > experts.index("Téléradiologie — CHRU de Tours")
    assert teleradiologist not in experts[dermatology : experts.index("</optgroup>", dermatology)]

    # The pool known, only its experts are offered.
    experts = _expert_select(gp.get(create_url, {"pool": tele.teleradiology.pk}).content.decode())
    assert teleradiologist in experts and dermatologist not in experts

    # Posted anyway, the dermatologist is refused for the teleradiology pool.
    response = gp.post(create_url, _form(tele, expert=tele.dermatologist.user.pk))
    assert response.status_code == 400
    html = response.content.decode()
    assert "This expert does not answer for the chosen pool." in html
    assert dermatologist not in _expert_select(html)
    assert not Request.objects.exists()


def test_the_form_offers_the_standard_delay_by_default_and_delays_in_days(tele):
    gp = english(tele.gp.user)
    form = gp.get(reverse("expertise-request-create", args=[tele.patient.pk])).content.decode()
    urgency = form[form.index('name="urgency"') :]
    urgency = urgency[: urgency.index("</select>")]
    assert '<option value="routine" selected>' in urgency
    assert '<option value="urgent" selected>' not in urgency
    assert "Priority — answer expected within 3 days" in urgency

    request = sent_request(tele, urgency="priority")
    page = gp.get(reverse("expertise-request", args=[request.pk])).content.decode()
    assert "answer expected within 3 days" in page and "72 h" not in page
    french = client_for(tele.gp.user).get(reverse("expertise-request", args=[request.pk]))
    sent = timezone.localtime(request.sent_at)
    assert sent.strftime("%d/%m/%Y %H:%M") in french.content.decode()
