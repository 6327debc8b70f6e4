"""The RCP pages as their users go through them (services are tested in test_rcp_services)."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.audit import Actor
from rcp import frcp, services
from rcp.models import Case, Session
from tests.conftest import client_for as _client_for
from tests.rcp_world import (
    COMPLETE_THORACIC,
    case_on_agenda,
    open_session,
    rcp_world,
    session_day_has_come,
    submitted_case,
)

pytestmark = pytest.mark.django_db


def client_for(user):
    """Pages in English, whatever the portal's default: the assertions quote the source."""
    client = _client_for(user)
    client.cookies["django_language"] = "en"
    return client


def _form_data(case, **fields):
    data = {**COMPLETE_THORACIC, "revision": case.revision, "studies": [], **fields}
    return {k: v for k, v in data.items() if v is not None}


def test_a_doctor_submits_a_complete_thoracic_case_with_its_ct(world):
    rcp_world(world)
    client = client_for(world.oncologist.user)
    response = client.post(
        reverse("rcp-case-create", args=[world.patient.pk]), {"committee": world.thoracic.pk}
    )
    case = Case.objects.get()
    assert response["Location"] == reverse("rcp-case", args=[case.pk])
    page = client.get(response["Location"]).content.decode()
    assert "The question asked to the meeting." in page  # what is missing, said plainly

    # Submitting too early: refused, with the reasons, nothing changes.
    client.post(reverse("rcp-case-submit", args=[case.pk]))
    case.refresh_from_db()
    assert case.state == Case.State.DRAFT

    # A bad TNM and an unknown ICD-10 code: refused field by field, nothing saved.
    bad = client.post(
        reverse("rcp-case", args=[case.pk]),
        _form_data(case, tnm_t="T9", topography="X99.9", studies=[world.ct.pk]),
    )
    assert bad.status_code == 400
    assert "Not a TNM category." in bad.content.decode()
    case.refresh_from_db()
    assert case.question == ""

    saved = client.post(
        reverse("rcp-case", args=[case.pk]), _form_data(case, tnm_t=" t2A ", studies=[world.ct.pk])
    )
    assert saved.status_code == 302
    case.refresh_from_db()
    assert case.tnm_t == "T2a" and list(case.studies.all()) == [world.ct]
    client.post(reverse("rcp-case-submit", args=[case.pk]))
    case.refresh_from_db()
    assert case.state == Case.State.SUBMITTED
    page = client.get(reverse("rcp-case", args=[case.pk])).content.decode()
    assert "C34.1" in page


def test_a_stale_edit_is_refused_and_nothing_is_lost(world):
    case = submitted_case(world)
    stale = case.revision
    coordinator = client_for(world.coordinator.user)
    coordinator.post(
        reverse("rcp-case", args=[case.pk]),
        _form_data(case, question="Question précisée par la coordination", studies=[world.ct.pk]),
    )
    doctor = client_for(world.oncologist.user)
    response = doctor.post(
        reverse("rcp-case", args=[case.pk]),
        {**_form_data(case, question="Ma version", studies=[world.ct.pk]), "revision": stale},
    )
    assert response.status_code == 409
    html = response.content.decode()
    assert "Somebody else changed this case" in html
    assert "Ma version" in html  # the doctor's text is still in the form, to apply again
    case.refresh_from_db()
    assert case.question == "Question précisée par la coordination"


def test_the_coordinator_builds_the_agenda_and_the_meeting_decides(world):
    case = submitted_case(world)
    coordinator = client_for(world.coordinator.user)
    coordinator.post(reverse("rcp-session-agenda-add", args=[world.session.pk]), {"case": case.pk})
    case.refresh_from_db()
    assert case.state == Case.State.ON_AGENDA and case.session == world.session

    live = reverse("rcp-session-live", args=[world.session.pk])
    quorum = reverse("rcp-session-quorum", args=[world.session.pk])
    assert 'data-met="false"' in coordinator.get(quorum).content.decode()
    # The day of the meeting: the coordinator opens it from the live page.
    session_day_has_come(world.session)
    assert 'data-testid="open-session"' in coordinator.get(live).content.decode()
    coordinator.post(reverse("rcp-session-open", args=[world.session.pk]), {"next": live})
    world.session.refresh_from_db()
    assert world.session.status == world.session.Status.IN_PROGRESS
    assert 'data-testid="open-session"' not in coordinator.get(live).content.decode()
    for person in (world.oncologist, world.surgeon, world.radiotherapist):
        client_for(person.user).post(
            reverse("rcp-session-attend", args=[world.session.pk]), {"mode": "remote"}
        )
    fragment = coordinator.get(quorum).content.decode()
    assert 'data-met="true"' in fragment and "Hélène Bertrand" in fragment

    page = client_for(world.surgeon.user).get(live + f"?dossier={case.pk}")
    html = page.content.decode()
    assert world.patient.display_name in html
    assert "/ws/review/" in html  # the CT in live shared review
    surgeon = client_for(world.surgeon.user)
    surgeon.post(
        reverse("rcp-case-decision", args=[case.pk]),
        {
            "proposal": "Lobectomie supérieure droite avec curage.",
            "treatment_types": ["387713003"],
            "conforms_to_guideline": "true",
            "next": live,
        },
    )
    case.refresh_from_db()
    assert case.state == Case.State.DISCUSSED
    draft = services.decision_draft(case)
    # A member cannot validate; the chair (the oncologist) can.
    surgeon.post(reverse("rcp-case-validate", args=[case.pk]), {"revision": draft.revision})
    case.refresh_from_db()
    assert case.state == Case.State.DISCUSSED
    client_for(world.oncologist.user).post(
        reverse("rcp-case-validate", args=[case.pk]), {"revision": draft.revision}
    )
    case.refresh_from_db()
    assert case.state == Case.State.VALIDATED
    decision = case.decisions.get()
    assert decision.quorum_status == frcp.QUORUM_REACHED
    assert {a["name"] for a in decision.attendees} >= {str(world.surgeon)}
    page = client_for(world.oncologist.user).get(reverse("rcp-case", args=[case.pk]))
    assert "intervention chirurgicale" in page.content.decode()


def _agenda_choices(page: str) -> list[int]:
    """The sessions the case page offers to put the case on."""
    form = re.search(r'action="[^"]*/inscrire/".*?</form>', page, re.S)
    assert form, "the case page offers no agenda choice"
    return [int(pk) for pk in re.findall(r'<option value="(\d+)"', form.group(0))]


def test_a_case_is_added_to_the_agenda_of_the_session_in_progress(world):
    rcp_world(world)
    session = open_session(world.session, by_user=world.coordinator.user)
    Session.objects.filter(pk=session.pk).update(
        starts_at=session.starts_at - dt.timedelta(minutes=30)  # the meeting began at 14:00
    )
    case = submitted_case(world)
    coordinator = client_for(world.coordinator.user)
    page = coordinator.get(reverse("rcp-case", args=[case.pk])).content.decode()

    # Today's meeting first, then next week's.
    assert _agenda_choices(page) == [session.pk, world.later_session.pk]
    response = coordinator.post(
        reverse("rcp-case-agenda", args=[case.pk]), {"session": session.pk}, follow=True
    )

    assert "Case put on the agenda of the session of" in response.content.decode()
    case.refresh_from_db()
    assert (case.state, case.session_id) == (Case.State.ON_AGENDA, session.pk)
    live = coordinator.get(reverse("rcp-session-live", args=[session.pk]))
    assert [c.pk for c in live.context["agenda"]] == [case.pk]


def test_members_of_another_committee_and_outsiders_get_404(world):
    case = case_on_agenda(world)
    for user in (world.outsider.user, world.gp.user):
        client = client_for(user)
        # The patient's GP reads his patient's case (tests/test_gp_rcp_access.py), not the
        # committee's sessions.
        expected = 200 if user == world.gp.user else 404
        assert client.get(reverse("rcp-case", args=[case.pk])).status_code == expected
        assert client.get(reverse("rcp-session", args=[world.session.pk])).status_code == 404
        assert client.get(reverse("rcp-session-live", args=[world.session.pk])).status_code == 404
        assert client.get(reverse("rcp-committee", args=[world.thoracic.pk])).status_code == 404


def test_the_agenda_pages_cost_the_same_queries_with_5_or_50_cases(world):
    rcp_world(world)
    by = Actor(user=world.oncologist.user)
    coordinator = Actor(user=world.coordinator.user)

    def add_cases(n):
        for _ in range(n):
            case = services.case_create(patient=world.patient, committee=world.thoracic, by=by)
            case = services.case_update(
                case=case, revision=case.revision, by=by, studies=[world.ct], **COMPLETE_THORACIC
            )
            case = services.case_submit(case=case, by=by)
            services.case_put_on_agenda(case=case, session=world.session, by=coordinator)

    client = client_for(world.coordinator.user)
    pages = [
        reverse("rcp-session", args=[world.session.pk]),
        reverse("rcp-session-live", args=[world.session.pk]),
    ]
    add_cases(5)
    counts = {}
    for url in pages:
        client.get(url)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        counts[url] = len(queries)
    add_cases(45)
    for url in pages:
        with CaptureQueriesContext(connection) as queries:
            html = client.get(url).content.decode()
        assert len(queries) == counts[url], url
    assert len(re.findall(r'class="state state-on_agenda"', html)) >= 49


def test_documents_are_checked_by_content_and_read_by_the_committee(world, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from portal.models import AuditEvent

    case = submitted_case(world)
    doctor = client_for(world.oncologist.user)
    url = reverse("rcp-case-document-upload", args=[case.pk])
    # A script renamed .pdf is refused, and nothing is stored.
    doctor.post(
        url,
        {
            "kind": "pathology",
            "title": "CR anapath",
            "file": SimpleUploadedFile("cr.pdf", b"<script>alert(1)</script>"),
        },
    )
    assert not case.documents.exists()
    doctor.post(
        url,
        {
            "kind": "pathology",
            "title": "CR anapath",
            "file": SimpleUploadedFile("cr.pdf", b"%PDF-1.7\n%%EOF\n"),
        },
    )
    document = case.documents.get()
    assert document.content_type == "application/pdf"
    reading = reverse("rcp-case-document", args=[case.pk, document.pk])
    response = client_for(world.surgeon.user).get(reading)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF-")
    assert AuditEvent.objects.filter(
        actor=world.surgeon.user, patient=world.patient, detail__document=document.pk
    ).exists()
    assert client_for(world.outsider.user).get(reading).status_code == 404
    # A member who is neither the submitter nor a coordinator does not add documents.
    client_for(world.surgeon.user).post(
        url,
        {
            "kind": "letter",
            "title": "Courrier",
            "file": SimpleUploadedFile("c.pdf", b"%PDF-1.7\n"),
        },
    )
    assert case.documents.count() == 1


def test_the_coordinator_sends_the_agenda_to_the_members(world, django_capture_on_commit_callbacks):
    from django.core import mail

    from portal.models import Notification

    case = case_on_agenda(world)
    with django_capture_on_commit_callbacks(execute=True):
        client_for(world.coordinator.user).post(
            reverse("rcp-session-agenda-send", args=[case.session_id])
        )
    assert len(mail.outbox) == 3
    told = set(Notification.objects.values_list("recipient", flat=True))
    assert told == {world.oncologist.user.pk, world.surgeon.user.pk, world.radiotherapist.user.pk}
    assert world.patient.birth_name not in " ".join(m.body for m in mail.outbox)
    # A plain member cannot.
    before = Notification.objects.count()
    client_for(world.surgeon.user).post(reverse("rcp-session-agenda-send", args=[case.session_id]))
    assert Notification.objects.count() == before


def test_the_coordinator_closes_the_session_and_attendance_ends(world):
    from rcp.models import Attendance, Session

    case = case_on_agenda(world)
    session = session_day_has_come(world.session)
    client_for(world.surgeon.user).post(
        reverse("rcp-session-attend", args=[session.pk]), {"mode": "remote"}
    )
    # A plain member cannot close it.
    client_for(world.surgeon.user).post(reverse("rcp-session-close", args=[session.pk]))
    assert Session.objects.get(pk=session.pk).status == Session.Status.PLANNED
    page = client_for(world.coordinator.user).post(
        reverse("rcp-session-close", args=[session.pk]), follow=True
    )
    # Nothing was discussed: the meeting did not take place, and says so.
    assert Session.objects.get(pk=session.pk).status == Session.Status.NOT_HELD
    assert "Not held" in page.content.decode()
    assert not Attendance.objects.filter(session_id=session.pk, left_at__isnull=True).exists()
    # The case left on its agenda waits for another session, postponed once.
    case.refresh_from_db()
    assert (case.state, case.session_id, case.postponements) == (Case.State.POSTPONED, None, 1)
    # A closed session takes no more cases.
    other = submitted_case(world)
    client_for(world.coordinator.user).post(
        reverse("rcp-session-agenda-add", args=[session.pk]), {"case": other.pk}
    )
    other.refresh_from_db()
    assert other.state == Case.State.SUBMITTED


def test_members_read_the_fiche_only_its_author_and_the_coordinators_edit_it(world):
    case = case_on_agenda(world)
    url = reverse("rcp-case", args=[case.pk])
    assert 'data-testid="case-form"' in client_for(world.oncologist.user).get(url).content.decode()
    assert 'data-testid="case-form"' in client_for(world.coordinator.user).get(url).content.decode()
    member = client_for(world.surgeon.user).get(url).content.decode()
    assert 'data-testid="case-form"' not in member
    assert "C34.1" in member  # the fiche, read-only


def test_the_committee_page_names_the_quorums_specialties_not_their_codes(world):
    rcp_world(world)
    page = client_for(world.coordinator.user).get(
        reverse("rcp-committee", args=[world.thoracic.pk])
    )
    text = page.content.decode()
    assert "chirurgie_thoracique" not in text
    assert "Thoracic surgery" in text  # the page is in English here (see client_for)


@pytest.mark.parametrize("typed", ["T2a", "2a", "cT2a", "t2a", "c T 2a"])
def test_the_usual_spellings_of_the_t_category_are_saved_as_t2a(world, typed):
    case = submitted_case(world, tnm_t="T1")
    response = client_for(world.oncologist.user).post(
        reverse("rcp-case", args=[case.pk]), _form_data(case, tnm_t=typed, studies=[world.ct.pk])
    )
    assert response.status_code == 302
    case.refresh_from_db()
    assert (case.tnm_prefix, case.tnm_t) == ("c", "T2a")


def test_a_typed_prefix_fills_the_empty_prefix_field(world):
    case = submitted_case(world, tnm_prefix="")
    client_for(world.oncologist.user).post(
        reverse("rcp-case", args=[case.pk]),
        _form_data(case, tnm_prefix="", tnm_t="pT2a", tnm_n="pN0", studies=[world.ct.pk]),
    )
    case.refresh_from_db()
    assert (case.tnm_prefix, case.tnm_t, case.tnm_n) == ("p", "T2a", "N0")


def test_a_typed_prefix_that_contradicts_the_prefix_field_is_refused(world):
    case = submitted_case(world)  # prefix c
    response = client_for(world.oncologist.user).post(
        reverse("rcp-case", args=[case.pk]),
        _form_data(case, tnm_t="pT3", studies=[world.ct.pk]),
    )
    assert response.status_code == 400
    assert "The prefix typed here (p) is not the TNM prefix (c)." in response.content.decode()
    case.refresh_from_db()
    assert case.tnm_t == "T2a"


def test_an_invalid_tnm_is_refused_with_the_expected_format_in_french(world):
    case = submitted_case(world)
    doctor = _client_for(world.oncologist.user)  # the portal's default language
    form_page = doctor.get(reverse("rcp-case", args=[case.pk])).content.decode()
    assert "T2a, Tis, TX" in form_page  # the format is shown before any mistake
    response = doctor.post(
        reverse("rcp-case", args=[case.pk]), _form_data(case, tnm_t="2z", studies=[world.ct.pk])
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Format attendu" in html and "T2a, 2a, cT2a, Tis, TX" in html
    case.refresh_from_db()
    assert case.tnm_t == "T2a"


def test_saving_a_proposal_says_whether_it_is_prepared_or_discussed(world):
    """Before the session opens the save prepares the proposal; in the open session it records
    the discussion: the confirmation says which, so nobody believes the case was discussed."""
    case = case_on_agenda(world)
    surgeon = client_for(world.surgeon.user)
    decision = reverse("rcp-case-decision", args=[case.pk])

    page = surgeon.post(decision, {"proposal": "Lobectomie."}, follow=True).content.decode()
    assert "Proposal prepared. The case will be discussed" in page
    assert "Decision saved (not validated yet)." not in page

    open_session(world.session, by_user=world.coordinator.user)
    revision = services.decision_draft(case).revision
    page = surgeon.post(
        decision, {"proposal": "Lobectomie, curage.", "revision": revision}, follow=True
    ).content.decode()
    assert "Decision saved (not validated yet)." in page
    assert "Proposal prepared" not in page
