"""Filling in the fiche RCP: organs of the chosen body system, codes searched in the national
lists, a confirmation after every action, and a state that reads as one sentence."""

import html
import re
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from portal.audit import Actor
from rcp import frcp, services
from rcp.models import Case, Decision
from tests.conftest import client_for as _client_for
from tests.rcp_world import COMPLETE_THORACIC, case_on_agenda, rcp_world, submitted_case
from tests.test_i18n import catalogues, compiled_locale  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

REFERENCE = Path("/work/shared/reference/frcp.md")
RESPIRATORY = "312419003"
DIGESTIVE = "86762007"
STOMACH = "69695003"


def client_for(user, language="fr"):
    client = _client_for(user)
    client.cookies["django_language"] = language
    return client


def _form_data(case, **fields):
    data = {**COMPLETE_THORACIC, "revision": case.revision, "studies": [], **fields}
    return {k: v for k, v in data.items() if v is not None}


def _messages(response) -> list[str]:
    """The confirmation/error lines base.html shows, as the user reads them."""
    page = response.content.decode()
    return [
        html.unescape(re.sub(r"<[^>]+>", "", m)).strip()
        for m in re.findall(r'<li class="message[^"]*">(.*?)</li>', page, re.S)
    ]


def _reference_codes(section: str) -> set[str]:
    """The codes of a value-set table of frcp.md (section "4.2", "4.3")."""
    text = REFERENCE.read_text(encoding="utf-8")
    start = text.index(f"### {section} ")
    end = text.index("\n### ", start + 1)
    return set(re.findall(r"^\| \d+ \| `([^`]+)` \|", text[start:end], re.M))


# --- Organs of the chosen body system --------------------------------------------------------


@pytest.mark.skipif(not REFERENCE.exists(), reason="the FRCP reference is not on this machine")
def test_every_published_organ_sits_under_a_published_body_system():
    organs = {code for codes in frcp.ORGANS_BY_APPAREIL.values() for code in codes}
    assert organs == _reference_codes("4.3")
    assert set(frcp.ORGANS_BY_APPAREIL) == _reference_codes("4.2")


def test_the_grouping_uses_only_the_value_sets_codes():
    organs = {code for codes in frcp.ORGANS_BY_APPAREIL.values() for code in codes}
    assert organs == {concept.code for concept in frcp.ORGANE}
    assert set(frcp.ORGANS_BY_APPAREIL) == {concept.code for concept in frcp.APPAREIL}
    assert "MED-255" in frcp.organs_of(RESPIRATORY)
    assert STOMACH not in frcp.organs_of(RESPIRATORY)


def test_an_organ_of_another_body_system_is_refused_and_nothing_is_saved(world):
    rcp_world(world)
    by = Actor(user=world.oncologist.user)
    case = services.case_create(patient=world.patient, committee=world.thoracic, by=by)
    client = client_for(world.oncologist.user, "en")
    response = client.post(
        reverse("rcp-case", args=[case.pk]),
        _form_data(case, organ_system=RESPIRATORY, organ=STOMACH),
    )
    assert response.status_code == 400
    assert "is not one of the body system" in response.content.decode()
    case.refresh_from_db()
    assert case.organ == "" and case.question == ""

    ok = client.post(
        reverse("rcp-case", args=[case.pk]), _form_data(case, organ_system=DIGESTIVE, organ=STOMACH)
    )
    assert ok.status_code == 302
    case.refresh_from_db()
    assert (case.organ_system, case.organ) == (DIGESTIVE, STOMACH)


def test_the_page_gives_the_browser_each_systems_organs_and_loads_the_fiche_script(world):
    rcp_world(world)
    case = services.case_create(
        patient=world.patient, committee=world.thoracic, by=Actor(user=world.oncologist.user)
    )
    page = client_for(world.oncologist.user).get(reverse("rcp-case", args=[case.pk]))
    html = page.content.decode()
    assert 'data-organ-filter="id_organ"' in html
    assert "js/fiche.js" in html
    assert "<script>" not in html  # the CSP forbids inline scripts


# --- ICD-10 and ICD-O-3 searched in the national lists ---------------------------------------


@pytest.mark.parametrize(
    "query,expected",
    [("poumon", "C34.1"), ("C34", "C34.1"), ("c341", "C34.1"), ("POUMON lobe sup", "C34.1")],
)
def test_the_topography_search_finds_by_code_or_words(world, query, expected):
    response = client_for(world.oncologist.user).get(reverse("rcp-codes-topography"), {"q": query})
    assert response.status_code == 200
    codes = [row["code"] for row in response.json()["results"]]
    assert expected in codes
    hit = next(row for row in response.json()["results"] if row["code"] == "C34.1")
    assert hit["label"] == frcp.topography_label("C34.1")


def test_the_search_ignores_accents_and_ligatures(world):
    client = client_for(world.oncologist.user)
    url = reverse("rcp-codes-topography")
    plain = [row["code"] for row in client.get(url, {"q": "oesophage"}).json()["results"]]
    accented = [row["code"] for row in client.get(url, {"q": "Œsophage"}).json()["results"]]
    assert plain and plain == accented
    morphology = client.get(reverse("rcp-codes-morphology"), {"q": "adenocarcinome"}).json()
    assert "8140/3" in [row["code"] for row in morphology["results"]]


def test_the_search_answers_a_bounded_list_and_nothing_for_nothing(world):
    client = client_for(world.oncologist.user)
    url = reverse("rcp-codes-topography")
    many = client.get(url, {"q": "tumeur"}).json()["results"]
    assert 0 < len(many) <= 15
    assert client.get(url, {"q": ""}).json()["results"] == []
    assert client.get(url, {"q": "x" * 5000}).status_code == 200


def test_an_anonymous_visitor_is_sent_to_sign_in(world):
    response = _client_for(None).get(reverse("rcp-codes-topography"), {"q": "poumon"})
    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_codes_off_the_lists_are_refused_with_a_clear_message(world):
    rcp_world(world)
    case = services.case_create(
        patient=world.patient, committee=world.thoracic, by=Actor(user=world.oncologist.user)
    )
    response = client_for(world.oncologist.user, "en").post(
        reverse("rcp-case", args=[case.pk]),
        _form_data(case, topography="poumon", morphology="8140/9"),
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Not an ICD-10 code of the national list." in page
    assert "Not an ICD-O-3 code of the national list." in page
    case.refresh_from_db()
    assert case.topography == "" and case.morphology == ""


def test_the_chosen_code_is_shown_with_its_label(world):
    case = submitted_case(world)
    case_draft = services.case_create(
        patient=world.patient, committee=world.thoracic, by=Actor(user=world.oncologist.user)
    )
    client = client_for(world.oncologist.user)
    client.post(reverse("rcp-case", args=[case_draft.pk]), _form_data(case_draft))
    form_page = client.get(reverse("rcp-case", args=[case_draft.pk])).content.decode()
    label = frcp.topography_label("C34.1")
    assert f'data-code-label="{label}"' in form_page
    summary = client_for(world.surgeon.user).get(reverse("rcp-case", args=[case.pk]))
    assert f'C34.1 — <span lang="fr">{label}</span>' in summary.content.decode()


@pytest.mark.usefixtures("catalogues")
def test_official_french_labels_are_marked_as_such_in_english(world):
    case = submitted_case(world)
    english = client_for(world.surgeon.user, "en").get(reverse("rcp-case", args=[case.pk]))
    page = english.content.decode()
    assert '<span lang="fr">Phase initiale du cancer</span>' in page
    assert "official French label" in page
    french = client_for(world.surgeon.user, "fr").get(reverse("rcp-case", args=[case.pk]))
    assert "libellé officiel" not in french.content.decode()  # no hint needed in French
    form = client_for(world.oncologist.user, "en").get(
        reverse(
            "rcp-case",
            args=[
                services.case_create(
                    patient=world.patient,
                    committee=world.thoracic,
                    by=Actor(user=world.oncologist.user),
                ).pk
            ],
        )
    )
    assert re.search(r'<select name="organ"[^>]*lang="fr"', form.content.decode())
    assert "Official French labels of the national list." in form.content.decode()


# --- A confirmation after every action --------------------------------------------------------


def _after(client, url, data=None):
    """POST then follow the redirect, like the browser: the message shows on the next page."""
    return client.post(url, data or {}, follow=True)


def test_each_case_action_confirms_what_it_did(world, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    rcp_world(world)
    doctor = client_for(world.oncologist.user, "en")
    coordinator = client_for(world.coordinator.user, "en")

    created = _after(
        doctor,
        reverse("rcp-case-create", args=[world.patient.pk]),
        {"committee": world.thoracic.pk},
    )
    assert "Draft case created: fill in the fiche RCP, then submit it." in _messages(created)
    case = Case.objects.get()

    saved = _after(
        doctor, reverse("rcp-case", args=[case.pk]), _form_data(case, studies=[world.ct.pk])
    )
    assert "Case saved." in _messages(saved)

    submitted = _after(doctor, reverse("rcp-case-submit", args=[case.pk]))
    assert (
        "Case submitted to the committee: the coordinator will put it on an agenda."
        in _messages(submitted)
    )

    session_day = timezone.localtime(world.session.starts_at).strftime("%d/%m/%Y %H:%M")
    agenda = _after(
        coordinator, reverse("rcp-case-agenda", args=[case.pk]), {"session": world.session.pk}
    )
    assert f"Case put on the agenda of the session of {session_day}." in _messages(agenda)

    later_day = timezone.localtime(world.later_session.starts_at).strftime("%d/%m/%Y %H:%M")
    postponed = _after(
        coordinator,
        reverse("rcp-case-postpone", args=[case.pk]),
        {"session": world.later_session.pk},
    )
    assert f"Case postponed to the session of {later_day}." in _messages(postponed)

    registered = _after(coordinator, reverse("rcp-case-register", args=[case.pk]))
    assert "Case registered without discussion." in _messages(registered)
    back = _after(coordinator, reverse("rcp-case-register", args=[case.pk]), {"discuss": "1"})
    assert "Case returned to discussion: it is on the agenda again." in _messages(back)

    waiting = _after(coordinator, reverse("rcp-case-postpone", args=[case.pk]), {"session": ""})
    assert "Case postponed: it waits for a later session." in _messages(waiting)

    opinion = _after(
        client_for(world.surgeon.user, "en"),
        reverse("rcp-case-opinion", args=[case.pk]),
        {"text": "Lobectomie envisageable."},
    )
    assert "Written opinion recorded." in _messages(opinion)


def test_a_refused_action_says_why_and_confirms_nothing(world):
    case = submitted_case(world)
    response = _after(
        client_for(world.oncologist.user, "en"), reverse("rcp-case-submit", args=[case.pk])
    )
    shown = _messages(response)
    assert shown and not any("submitted to the committee" in line for line in shown)


def test_the_decision_and_a_document_are_confirmed(world, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    case = submitted_case(world)
    attached = _after(
        client_for(world.oncologist.user, "en"),
        reverse("rcp-case-document-upload", args=[case.pk]),
        {
            "kind": "pathology",
            "title": "CR anapath",
            "file": SimpleUploadedFile("cr.pdf", b"%PDF-1.7\n%%EOF\n"),
        },
    )
    assert "Document attached." in _messages(attached)
    services.case_put_on_agenda(
        case=case, session=world.session, by=Actor(user=world.coordinator.user)
    )
    decision = _after(
        client_for(world.surgeon.user, "en"),
        reverse("rcp-case-decision", args=[case.pk]),
        {"proposal": "Lobectomie", "conforms_to_guideline": "true"},
    )
    # The session is not open yet: the save prepares the proposal, and says so.
    assert (
        "Proposal prepared. The case will be discussed, and its decision validated, once the "
        "session is open." in _messages(decision)
    )


# --- The state as one sentence, in French and in English -------------------------------------


def _status(response) -> str:
    match = re.search(
        r'data-testid="case-status">(.*?)</span>\s*(?:<span class="muted"|</p>)',
        response.content.decode(),
        re.S,
    )
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(1)))).strip()


@pytest.mark.usefixtures("catalogues")
def test_the_state_reads_as_one_sentence_in_french_and_english(world):
    case = submitted_case(world)
    day = timezone.localtime(case.submitted_at).strftime("%d/%m/%Y")
    url = reverse("rcp-case", args=[case.pk])
    french = _status(client_for(world.surgeon.user, "fr").get(url))
    assert french == f"Soumis le {day} par Dr Claire Martin"
    english = _status(client_for(world.surgeon.user, "en").get(url))
    assert english == f"Submitted on {day} by Dr Claire Martin"

    services.case_put_on_agenda(
        case=case, session=world.session, by=Actor(user=world.coordinator.user)
    )
    session = timezone.localtime(world.session.starts_at).strftime("%d/%m/%Y %H:%M")
    assert _status(client_for(world.surgeon.user, "fr").get(url)) == (
        f"À l'ordre du jour de la séance du {session}"
    )
    assert _status(client_for(world.surgeon.user, "en").get(url)) == (
        f"On the agenda of the session of {session}"
    )
    case.refresh_from_db()
    services.case_postpone(case=case, to_session=None, by=Actor(user=world.coordinator.user))
    page = client_for(world.surgeon.user, "fr").get(url)
    assert _status(page) == "Reporté et en attente d'une séance ultérieure"
    assert "Reporté une fois" in page.content.decode()


@pytest.mark.usefixtures("catalogues")
def test_a_draft_and_a_registered_case_read_well(world):
    rcp_world(world)
    case = services.case_create(
        patient=world.patient, committee=world.thoracic, by=Actor(user=world.oncologist.user)
    )
    day = timezone.localtime(case.created_at).strftime("%d/%m/%Y")
    url = reverse("rcp-case", args=[case.pk])
    assert _status(client_for(world.oncologist.user, "fr").get(url)) == (
        f"Brouillon créé le {day} par Dr Claire Martin"
    )
    assert _status(client_for(world.oncologist.user, "en").get(url)) == (
        f"Draft created on {day} by Dr Claire Martin"
    )
    registered = case_on_agenda(world)
    services.case_register(case=registered, by=Actor(user=world.coordinator.user))
    session = timezone.localtime(world.session.starts_at).strftime("%d/%m/%Y %H:%M")
    assert _status(
        client_for(world.surgeon.user, "en").get(reverse("rcp-case", args=[registered.pk]))
    ) == (f"Registered without discussion, at the session of {session}")


@pytest.mark.usefixtures("catalogues")
def test_a_validated_decision_names_its_day_and_who_validated_it(world):
    case = case_on_agenda(world)
    when = timezone.now()
    # The validation itself is tested with the meeting; here, only how it reads.
    Decision.objects.create(
        case=case,
        proposal="Lobectomie.",
        created_by=world.surgeon.user,
        validated_by=world.surgeon.user,
        validated_at=when,
    )
    Case.objects.filter(pk=case.pk).update(
        state=Case.State.VALIDATED, validated_at=when, postponements=2
    )
    day = timezone.localtime(when).strftime("%d/%m/%Y")
    page = client_for(world.oncologist.user, "fr").get(reverse("rcp-case", args=[case.pk]))
    assert _status(page) == f"Décision validée le {day} par Pr Antoine Rousseau"
    assert "Reporté 2 fois" in html.unescape(page.content.decode())
    english = client_for(world.oncologist.user, "en").get(reverse("rcp-case", args=[case.pk]))
    assert _status(english) == f"Decision validated on {day} by Pr Antoine Rousseau"
    patient_page = client_for(world.oncologist.user, "fr").get(
        reverse("patient-detail", args=[world.patient.pk])
    )
    assert f"le {day} par Pr Antoine Rousseau" in html.unescape(patient_page.content.decode())
