"""The patient's declared GP ("médecin traitant"), issue 16.

Jeanne Dupont (world.patient) has Dr Pierre Lemoine (world.gp, MSP de Vierzon) as her GP,
recorded before declarations had a date. She chooses Dr Sophie Bernard, then Dr Marc Girard:
her referring oncologist (Tours) declares each one from her record, or the CHRU de Tours'
HL7 feed tells it (PD1-4, or a ROL segment of her primary care provider). The declared GP
opens her record and finds her news on his home page; the previous one loses both.
"""

import datetime as dt
import html
import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from portal import gp as gp_services
from portal.audit import Actor
from portal.directory_models import DirectoryIdType, DirectoryPerson
from portal.hl7 import handle_message
from portal.home import gp_news
from portal.identifiers import luhn_complete
from portal.models import (
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    CareRelationship,
    CareRole,
    Notification,
    Professional,
)
from portal.selectors import access_generation, patients_visible_to
from tests.builders import professional as make_professional
from tests.conftest import client_for
from tests.permission_matrix import imaged_study
from tests.test_hl7_listener import ack_fields, adt

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}
# Dr Marc Girard: listed in the national directory, no account in the portal yet.
GIRARD_RPPS = luhn_complete("1000012345")
# Not in the directory, nor in the portal.
UNKNOWN_RPPS = luhn_complete("1000099999")
RPPS_AUTHORITY = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"


def _directory_person(*, rpps, last_name, first_name) -> DirectoryPerson:
    person, _ = DirectoryPerson.objects.get_or_create(
        national_id=DirectoryIdType.RPPS + rpps,
        defaults={
            "id_type": DirectoryIdType.RPPS,
            "rpps": rpps,
            "civility": "Docteur",
            "last_name": last_name,
            "first_name": first_name,
            "profession_code": "10",
            "profession_label": "Médecin",
            "specialty_label": "Médecine générale",
            "specialty": "medecine_generale",
        },
    )
    return person


@pytest.fixture
def bernard(world) -> Professional:
    """Dr Sophie Bernard, GP at the Vierzon practice, with her account and in the directory."""
    professional = make_professional(
        email="medecin.bernard@mirc.test",
        first_name="Sophie",
        last_name="Bernard",
        specialty="medecine_generale",
        establishment=world.practice,
    )
    _directory_person(rpps=professional.rpps, last_name="BERNARD", first_name="SOPHIE")
    return professional


@pytest.fixture
def girard(world) -> DirectoryPerson:
    return _directory_person(rpps=GIRARD_RPPS, last_name="GIRARD", first_name="MARC")


def _current_gp(patient) -> CareRelationship | None:
    return CareRelationship.objects.filter(
        patient=patient, role=CareRole.GP, ended_at__isnull=True
    ).first()


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _declare_from_the_page(client, patient, national_id, started_on=None):
    """What the referring doctor does: look the GP up, choose him, confirm with the date."""
    url = reverse("patient-gp", args=[patient.pk])
    search = client.get(url, {"q": national_id[1:]})
    assert search.status_code == 200
    assert f'value="{national_id}"' in search.content.decode()
    confirmation = client.post(url, {"national_id": national_id})
    assert confirmation.status_code == 200
    assert 'data-testid="gp-declare-form"' in confirmation.content.decode()
    seen = confirmation.context["form"].initial["seen_current"]
    return client.post(
        url,
        {
            "national_id": national_id,
            "seen_current": seen or "",
            "started_on": (started_on or timezone.localdate()).isoformat(),
        },
    )


def _declare_in_portal(by: Actor, patient, professional, *, started_on):
    return gp_services.gp_declare(
        by=by,
        patient=patient,
        professional=professional,
        started_on=started_on,
        source="portal",
    )


def _lemoine_for_over_a_year(patient) -> None:
    """Dr Lemoine has been her GP for over a year (the world records him today)."""
    CareRelationship.objects.filter(patient=patient, role=CareRole.GP).update(
        started_at=timezone.now() - dt.timedelta(days=400)
    )


def _home_news_patients(user) -> set[int]:
    return {item.patient.pk for item in gp_news(user)}


# --- Done when: the declared GP sees his new patient; the previous one loses her ---------------


def test_the_declared_gp_follows_his_new_patient_and_the_previous_one_loses_her(
    world, bernard, girard
):
    jeanne = world.patient
    oncologist = client_for(world.oncologist.user)

    # Dr Bernard is declared from the record, from today.
    response = _declare_from_the_page(oncologist, jeanne, "8" + bernard.rpps)
    assert response.status_code == 302
    assert response["Location"] == reverse("patient-detail", args=[jeanne.pk])
    # The GP before her (Dr Lemoine) no longer opens the record, nor sees her news.
    assert (
        client_for(world.gp.user).get(reverse("patient-detail", args=[jeanne.pk])).status_code
        == 404
    )
    assert jeanne.pk not in _home_news_patients(world.gp.user)

    # A CT of Jeanne arrives: Dr Bernard's home lists it, and she opens the record.
    study = imaged_study(world, key="gp-ct")["study"]
    bernard_client = client_for(bernard.user)
    home = _text(bernard_client.get(reverse("home")))
    news = home[home.index('data-testid="gp-news"') :]
    assert jeanne.display_name in news
    assert reverse("study-viewer", args=[study.pk]) in news
    assert bernard_client.get(reverse("patient-detail", args=[jeanne.pk])).status_code == 200
    assert bernard_client.get(reverse("study-viewer", args=[study.pk])).status_code == 200
    assert Notification.objects.filter(
        recipient=bernard.user, url=reverse("patient-detail", args=[jeanne.pk])
    ).exists()

    # Dr Girard (in the directory, no account yet) is declared: an account is made for him.
    response = _declare_from_the_page(oncologist, jeanne, "8" + GIRARD_RPPS)
    assert response.status_code == 302
    girard_professional = Professional.objects.get(rpps=GIRARD_RPPS)

    # Dr Bernard gets the same 404 as for a record that does not exist; her home forgets Jeanne.
    assert bernard_client.get(reverse("patient-detail", args=[jeanne.pk])).status_code == 404
    assert bernard_client.get(reverse("study-viewer", args=[study.pk])).status_code == 404
    home = _text(bernard_client.get(reverse("home")))
    assert jeanne.display_name not in home
    assert not patients_visible_to(bernard.user).filter(pk=jeanne.pk).exists()
    # Dr Girard has her news and her record.
    girard_client = client_for(girard_professional.user)
    home = _text(girard_client.get(reverse("home")))
    assert jeanne.display_name in home[home.index('data-testid="gp-news"') :]
    assert girard_client.get(reverse("patient-detail", args=[jeanne.pk])).status_code == 200
    # Told, without her name.
    told = Notification.objects.get(recipient=bernard.user, msgid__startswith="Another general")
    assert jeanne.birth_name.upper() not in told.message.upper()


def test_the_record_shows_the_current_gp_since_when_by_whom_and_the_history(world, bernard, girard):
    jeanne = world.patient
    oncologist = client_for(world.oncologist.user)
    _lemoine_for_over_a_year(jeanne)
    last_week = timezone.localdate() - dt.timedelta(days=7)
    _declare_from_the_page(oncologist, jeanne, "8" + bernard.rpps, started_on=last_week)
    _declare_from_the_page(oncologist, jeanne, "8" + GIRARD_RPPS)

    page = _text(oncologist.get(reverse("patient-detail", args=[jeanne.pk]), **ENGLISH))
    block = page[page.index('data-testid="declared-gp"') :]
    today = timezone.localdate().strftime("%d/%m/%Y")
    assert "Dr Marc GIRARD" in block[: block.index('data-testid="gp-history"')]
    assert f"Since {today}, declared in the portal by Dr Claire Martin on {today}." in block
    history = block[block.index('data-testid="gp-history"') :]
    assert history.index("Dr Sophie Bernard") < history.index("Dr Pierre Lemoine")
    assert f"Since {last_week:%d/%m/%Y}, declared in the portal by Dr Claire Martin" in history
    assert "another GP was declared" in history
    # In French, by default.
    page = _text(oncologist.get(reverse("patient-detail", args=[jeanne.pk])))
    assert "Médecin traitant déclaré" in page
    assert f"Depuis le {today}, déclaré dans le portail par Dr Claire Martin le {today}." in page
    assert "Médecins traitants précédents" in page
    # The person declaring is offered the page; the GP of another patient is not.
    assert 'data-testid="gp-declare"' in page


def test_a_declaration_the_portal_recorded_without_a_person_names_nobody(world, bernard):
    """The demo's GPs, and any declared by the portal itself (no user): no empty "by"."""
    jeanne = world.patient
    oncologist = client_for(world.oncologist.user)
    _declare_from_the_page(oncologist, jeanne, "8" + bernard.rpps)
    CareRelationship.objects.filter(patient=jeanne, role=CareRole.GP, ended_at__isnull=True).update(
        created_by=None
    )
    page = _text(oncologist.get(reverse("patient-detail", args=[jeanne.pk])))
    today = timezone.localdate().strftime("%d/%m/%Y")
    assert f"Depuis le {today}, déclaré dans le portail le {today}." in page
    assert "par  le" not in page and "par le" not in page


def test_the_declaration_is_one_audited_change_on_the_patient(world, bernard):
    jeanne = world.patient
    previous = _current_gp(jeanne)
    before = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    bernard_generation = access_generation(bernard.user.pk)
    lemoine_generation = access_generation(world.gp.user.pk)

    relationship = _declare_in_portal(
        Actor(user=world.oncologist.user), jeanne, bernard, started_on=timezone.localdate()
    )

    [event] = AuditEvent.objects.filter(pk__gt=before)
    assert (event.event_id, event.patient, event.actor) == (
        AuditEventId.SECURITY_ALERT,
        jeanne,
        world.oncologist.user,
    )
    assert event.detail["gp_declared"] == bernard.rpps
    assert event.detail["previous_gp"] == world.gp.rpps
    assert event.detail["reason"] == "another GP declared"
    previous.refresh_from_db()
    assert previous.ended_by == world.oncologist.user
    assert previous.end_reason == "another GP declared"
    assert (relationship.started_on, relationship.source) == (timezone.localdate(), "portal")
    # Both GPs' cached access decisions are forgotten.
    assert access_generation(bernard.user.pk) != bernard_generation
    assert access_generation(world.gp.user.pk) != lemoine_generation


def test_the_declaration_page_is_a_read_of_the_record(world):
    jeanne = world.patient
    client = client_for(world.oncologist.user)  # signing in writes its own event
    before = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = client.get(reverse("patient-gp", args=[jeanne.pk]))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [event] = AuditEvent.objects.filter(pk__gt=before)
    assert (event.event_id, event.action, event.patient) == (
        AuditEventId.PATIENT_RECORD,
        "R",
        jeanne,
    )


# --- Refusals ------------------------------------------------------------------------------------


def test_bad_dates_are_refused_with_a_message_and_nothing_changes(world, bernard):
    jeanne = world.patient
    client = client_for(world.oncologist.user)
    url = reverse("patient-gp", args=[jeanne.pk])
    lemoine = _current_gp(jeanne)
    base = {"national_id": "8" + bernard.rpps, "seen_current": lemoine.pk}

    tomorrow = timezone.localdate() + dt.timedelta(days=1)
    response = client.post(url, {**base, "started_on": tomorrow.isoformat()}, **ENGLISH)
    assert response.status_code == 200
    assert "The GP's start date cannot be in the future." in _text(response)
    response = client.post(url, {**base, "started_on": "2026-02-30"}, **ENGLISH)
    assert response.status_code == 200
    assert "Enter a valid date." in response.content.decode()
    # Before the current GP's declaration: refused, the date is the one to correct.
    before_lemoine = timezone.localdate(lemoine.started_at) - dt.timedelta(days=1)
    response = client.post(url, {**base, "started_on": before_lemoine.isoformat()}, **ENGLISH)
    assert response.status_code == 200
    assert "The start date precedes the current GP" in _text(response)
    assert _current_gp(jeanne) == lemoine


def test_a_declaration_made_meanwhile_is_not_overwritten(world, bernard, girard):
    jeanne = world.patient
    client = client_for(world.oncologist.user)
    url = reverse("patient-gp", args=[jeanne.pk])
    # The oncologist's page shows Dr Lemoine as the current GP...
    seen = client.post(url, {"national_id": "8" + GIRARD_RPPS}).context["form"].initial
    # ...while the Tours feed declares Dr Bernard.
    gp_services.gp_declare(
        by=Actor.system("HL7 370000481"),
        patient=jeanne,
        professional=bernard,
        started_on=timezone.localdate(),
        source="hl7",
        establishment=world.tours,
    )
    response = client.post(
        url,
        {
            "national_id": "8" + GIRARD_RPPS,
            "seen_current": seen["seen_current"],
            "started_on": timezone.localdate().isoformat(),
        },
        follow=True,
        **ENGLISH,
    )
    assert "Another GP was declared for this patient meanwhile" in _text(response)
    assert _current_gp(jeanne).professional == bernard
    assert not Professional.objects.filter(rpps=GIRARD_RPPS).exists()


def test_who_may_declare(world, bernard):
    jeanne = world.patient
    # The Bourges radiologist is outside her care team: the record does not open (matrix).
    # The DPO reads the audit trail; he does not treat her.
    with pytest.raises(PermissionDenied):
        _declare_in_portal(
            Actor(user=world.coordinator.user), jeanne, bernard, started_on=timezone.localdate()
        )
    refusal = AuditEvent.objects.filter(
        actor=world.coordinator.user, outcome=AuditOutcome.MINOR_FAILURE
    ).get()
    assert refusal.patient == jeanne
    # Her GP himself records her new choice.
    _declare_in_portal(Actor(user=world.gp.user), jeanne, bernard, started_on=timezone.localdate())
    assert _current_gp(jeanne).professional == bernard
    # Declaring her again is said, not repeated.
    with pytest.raises(gp_services.GpAlreadyDeclared):
        _declare_in_portal(
            Actor(user=world.oncologist.user), jeanne, bernard, started_on=timezone.localdate()
        )


def test_only_a_physician_is_declared_gp(world):
    nurse = make_professional(
        email="infirmiere@mirc.test",
        first_name="Léa",
        last_name="Moreau",
        profession="infirmier",
        establishment=world.practice,
        title="Mme",
    )
    with pytest.raises(ValidationError, match="Only an active physician"):
        _declare_in_portal(
            Actor(user=world.oncologist.user), world.patient, nurse, started_on=timezone.localdate()
        )
    assert _current_gp(world.patient).professional == world.gp


@pytest.mark.parametrize(
    "xcn,rpps",
    [
        # The national identifier of a professional: "8" + RPPS.
        ("810000123454^GIRARD^MARC^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO", GIRARD_RPPS),
        # The bare RPPS, said so by the identifier type.
        ("10000123454^GIRARD^MARC^^^^^^^^^^RPPS", GIRARD_RPPS),
        # "0" + ADELI under the same authority: no RPPS.
        ("0371234567^PETIT^ANNE^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^^^^ADELI", ""),
        # A local code of the establishment, or a wrong check digit.
        ("MT042^GIRARD^MARC^^^^^^CHRU-TOURS", ""),
        ("10000123455^GIRARD^MARC^^^^^^^^^^RPPS", ""),
    ],
)
def test_the_rpps_of_an_xcn(xcn, rpps):
    from portal.hl7 import _xcn as read_xcn

    assert read_xcn(xcn, lambda text: text)[0] == rpps


# --- The HL7 feed ---------------------------------------------------------------------------------


def _jeanne_a08(control, *, pd1="", rol="", event="A08"):
    """An A08 of the CHRU de Tours for Jeanne (IPP T100001) with a PD1 and/or a ROL."""
    message = adt(
        event=event,
        control=control,
        ipp="T100001^^^CHRU-TOURS&1.2.250.1.211.10.200.2&ISO^PI",
        ins=world_ins(),
        names="DUPONT^Jeanne^Jeanne Marie^^^^L",
        birth_date="19560312",
        birth_place="37261",
    )
    extra = "".join(segment + "\r" for segment in (pd1, rol) if segment)
    return message.replace("PV1||N\r", extra + "PV1||N\r")


def world_ins():
    from portal.models import Patient

    return Patient.objects.get(identifiers__value="T100001").ins_matricule


def _xcn(rpps, family="BERNARD", given="SOPHIE", *, national=True):
    identifier = ("8" + rpps) if national else rpps
    return f"{identifier}^{family}^{given}^^^DR^^^{RPPS_AUTHORITY}^D^^^RPPS"


def test_pd1_4_declares_a_gp_the_portal_knows(world, bernard):
    jeanne = world.patient
    result = handle_message(_jeanne_a08("GP-1", pd1=f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}"))

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AA"
    assert "ERR" not in ack
    current = _current_gp(jeanne)
    assert current.professional == bernard
    assert (current.source, current.establishment, current.started_on) == (
        "hl7",
        world.tours,
        timezone.localdate(),
    )
    event = AuditEvent.objects.get(patient=jeanne, detail__gp_declared=bernard.rpps)
    assert (event.detail["source"], event.detail["establishment"]) == ("hl7", "370000481")
    assert event.detail["message"] == "GP-1"
    # The next A08 carries the same GP: nothing more happens.
    handle_message(_jeanne_a08("GP-2", pd1=f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}"))
    assert CareRelationship.objects.filter(patient=jeanne, role=CareRole.GP).count() == 2
    # The record names the feed.
    page = _text(
        client_for(world.oncologist.user).get(
            reverse("patient-detail", args=[jeanne.pk]), **ENGLISH
        )
    )
    today = timezone.localdate().strftime("%d/%m/%Y")
    assert f"Since {today}, received from the HL7 feed of CHRU de Tours (FINESS 370000481)." in page


def test_an_a28_registers_a_new_patient_with_her_gp(world, bernard):
    result = handle_message(
        adt(control="GP-10").replace("PV1||N\r", f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}\rPV1||N\r")
    )
    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert result.created
    assert _current_gp(result.patient).professional == bernard
    assert patients_visible_to(bernard.user).filter(pk=result.patient.pk).exists()


def test_a_rol_of_the_primary_care_provider_declares_a_directory_gp_from_its_date(world, girard):
    jeanne = world.patient
    _lemoine_for_over_a_year(jeanne)
    chosen = timezone.localdate() - dt.timedelta(days=3)
    girard_xcn = _xcn(GIRARD_RPPS, "GIRARD", "MARC")
    rol = f"ROL|1|AD|PP^Primary Care Provider^HL70443|{girard_xcn}|{chosen:%Y%m%d}"

    result = handle_message(_jeanne_a08("GP-3", rol=rol, event="A04"))

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    girard_professional = Professional.objects.get(rpps=GIRARD_RPPS)
    current = _current_gp(jeanne)
    assert (current.professional, current.started_on) == (girard_professional, chosen)
    assert jeanne in patients_visible_to(girard_professional.user)
    assert not patients_visible_to(world.gp.user).filter(pk=jeanne.pk).exists()


def test_an_unknown_rpps_is_accepted_and_kept_in_the_audit(world):
    jeanne = world.patient
    lemoine = _current_gp(jeanne)
    result = handle_message(
        _jeanne_a08("GP-4", pd1=f"PD1|||CABINET^^^|{_xcn(UNKNOWN_RPPS, 'INCONNU', 'JEAN')}")
    )

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AA"
    assert ack["ERR"][4] == "W"
    assert ack["ERR"][2] == "PD1^1^4"
    assert _current_gp(jeanne) == lemoine
    event = AuditEvent.objects.get(patient=jeanne, detail__has_key="gp_unresolved")
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.detail["gp_unresolved"]["identifier"] == "8" + UNKNOWN_RPPS
    assert event.detail["gp_unresolved"]["family_name"] == "INCONNU"
    assert event.detail["message"] == "GP-4"


def test_a_rol_de_ends_the_declaration(world, bernard):
    jeanne = world.patient
    handle_message(_jeanne_a08("GP-5", pd1=f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}"))
    assert _current_gp(jeanne).professional == bernard

    rol = f"ROL|1|DE|PP^Primary Care Provider^HL70443|{_xcn(bernard.rpps)}"
    result = handle_message(_jeanne_a08("GP-6", rol=rol))

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert _current_gp(jeanne) is None
    ended = CareRelationship.objects.get(patient=jeanne, professional=bernard)
    assert ended.end_reason == "GP declaration withdrawn"
    assert not patients_visible_to(bernard.user).filter(pk=jeanne.pk).exists()
    assert AuditEvent.objects.filter(patient=jeanne, detail__gp_withdrawn=bernard.rpps).exists()


def test_withdrawing_an_unknown_gp_changes_nothing_and_is_kept_in_the_audit(world, bernard):
    jeanne = world.patient
    handle_message(_jeanne_a08("GP-11", pd1=f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}"))
    unknown = _xcn(UNKNOWN_RPPS, "INCONNU", "JEAN")

    result = handle_message(_jeanne_a08("GP-12", rol=f"ROL|1|DE|PP|{unknown}"))

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AA"
    assert (ack["ERR"][4], ack["ERR"][2]) == ("W", "ROL^1^4")
    assert _current_gp(jeanne).professional == bernard
    event = AuditEvent.objects.get(patient=jeanne, detail__message="GP-12")
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.detail["gp_withdraw"] is True
    assert event.detail["gp_unresolved"]["family_name"] == "INCONNU"
    assert event.detail["reason"] == "unknown GP"


def test_a_feed_still_naming_the_replaced_gp_does_not_take_the_patient_back(world, bernard, girard):
    jeanne = world.patient
    pd1_bernard = f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}"
    handle_message(_jeanne_a08("GP-20", pd1=pd1_bernard))
    assert _current_gp(jeanne).professional == bernard
    # Jeanne chose Dr Girard: her oncologist declares him in the portal.
    _declare_in_portal(
        Actor(user=world.oncologist.user), jeanne, girard, started_on=timezone.localdate()
    )
    girard_professional = Professional.objects.get(rpps=GIRARD_RPPS)

    # The CHRU's record still names Dr Bernard, undated, in every A08.
    result = handle_message(_jeanne_a08("GP-21", pd1=pd1_bernard))

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AA"
    assert (ack["ERR"][4], ack["ERR"][2]) == ("W", "PD1^1^4")
    assert _current_gp(jeanne).professional == girard_professional
    assert not patients_visible_to(bernard.user).filter(pk=jeanne.pk).exists()
    event = AuditEvent.objects.get(patient=jeanne, detail__message="GP-21")
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert "does not bring him back" in event.detail["reason"]

    # A dated ROL of the CHRU (she went back to Dr Bernard) does.
    rol = f"ROL|1|UC|PP|{_xcn(bernard.rpps)}|{timezone.localdate():%Y%m%d}"
    assert ack_fields(handle_message(_jeanne_a08("GP-22", rol=rol)).ack)["MSA"][1] == "AA"
    assert _current_gp(jeanne).professional == bernard


def test_an_undated_feed_declares_a_gp_never_declared_before(world, bernard, girard):
    jeanne = world.patient
    _lemoine_for_over_a_year(jeanne)
    _declare_in_portal(
        Actor(user=world.oncologist.user),
        jeanne,
        bernard,
        started_on=timezone.localdate() - dt.timedelta(days=10),
    )
    girard_xcn = _xcn(GIRARD_RPPS, "GIRARD", "MARC")
    result = handle_message(_jeanne_a08("GP-23", pd1=f"PD1|||CABINET^^^|{girard_xcn}"))
    assert "ERR" not in ack_fields(result.ack)
    assert _current_gp(jeanne).professional.rpps == GIRARD_RPPS


def test_an_older_rol_date_or_a_bad_one_changes_nothing(world, bernard, girard):
    jeanne = world.patient
    handle_message(_jeanne_a08("GP-7", pd1=f"PD1|||CABINET^^^|{_xcn(bernard.rpps)}"))
    last_year = timezone.localdate() - dt.timedelta(days=365)
    # An older message, late: Dr Girard was chosen before Dr Bernard's declaration.
    rol = f"ROL|1|UC|PP|{_xcn(GIRARD_RPPS, 'GIRARD', 'MARC')}|{last_year:%Y%m%d}"
    late = handle_message(_jeanne_a08("GP-8", rol=rol))
    assert ack_fields(late.ack)["MSA"][1] == "AA"
    assert ack_fields(late.ack)["ERR"][4] == "W"
    assert _current_gp(jeanne).professional == bernard
    assert (
        AuditEvent.objects.filter(patient=jeanne, detail__message="GP-8")
        .get()
        .detail["gp_unresolved"]["family_name"]
        == "GIRARD"
    )
    # A malformed date: the message is refused, nothing written.
    rol = f"ROL|1|UC|PP|{_xcn(GIRARD_RPPS, 'GIRARD', 'MARC')}|2026XX01"
    refused = handle_message(_jeanne_a08("GP-9", rol=rol))
    assert ack_fields(refused.ack)["MSA"][1] == "AE"
    assert ack_fields(refused.ack)["ERR"][2] == "ROL^1^5"
    assert _current_gp(jeanne).professional == bernard


@pytest.mark.django_db(transaction=True)
def test_two_declarations_at_once_on_postgresql_one_wins_the_other_is_told(world, bernard):
    if connection.vendor != "postgresql":
        pytest.skip("runs on the production shape: DATABASE_URL=postgres://...")
    jeanne = world.patient
    girard = make_professional(
        email="medecin.girard@mirc.test",
        first_name="Marc",
        last_name="Girard",
        specialty="medecine_generale",
        establishment=world.practice,
    )
    seen = _current_gp(jeanne).pk
    start = threading.Barrier(2, timeout=30)
    outcomes = {}

    def declare(professional):
        try:
            start.wait()
            gp_services.gp_declare(
                by=Actor(user=world.oncologist.user),
                patient=jeanne,
                professional=professional,
                started_on=timezone.localdate(),
                source="portal",
                seen_current=seen,
            )
            outcomes[professional.pk] = "declared"
        except gp_services.GpDeclarationStale:
            outcomes[professional.pk] = "stale"
        except Exception as exc:  # noqa: BLE001 (reported below)
            outcomes[professional.pk] = repr(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=declare, args=(p,)) for p in (bernard, girard)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert sorted(outcomes.values()) == ["declared", "stale"]
    [winner] = [pk for pk, outcome in outcomes.items() if outcome == "declared"]
    assert _current_gp(jeanne).professional_id == winner
    assert (
        CareRelationship.objects.filter(
            patient=jeanne, role=CareRole.GP, ended_at__isnull=True
        ).count()
        == 1
    )


def test_a_merge_keeps_the_declaration_of_the_gp_it_moves(world, bernard):
    from portal.services import care_relationship_end, patient_merge
    from tests.test_hl7_merge import duplicate_of_jeanne

    jeanne = world.patient
    care_relationship_end(relationship=_current_gp(jeanne), by=Actor.system("tests"))
    duplicate = duplicate_of_jeanne(world)
    last_month = timezone.localdate() - dt.timedelta(days=30)
    gp_services.gp_declare(
        by=Actor.system("HL7 370000481"),
        patient=duplicate,
        professional=bernard,
        started_on=last_month,
        source="hl7",
        establishment=world.tours,
    )

    patient_merge(source=duplicate, target=jeanne, by=Actor.system("tests"))

    current = _current_gp(jeanne)
    assert (current.professional, current.started_on, current.source) == (
        bernard,
        last_month,
        "hl7",
    )


@pytest.mark.parametrize("newer", ["duplicate's", "survivor's"])
def test_at_a_merge_the_newer_declaration_stays_the_gp(world, bernard, newer):
    from portal.services import patient_merge
    from tests.test_hl7_merge import duplicate_of_jeanne

    jeanne = world.patient
    _lemoine_for_over_a_year(jeanne)
    lemoine = _current_gp(jeanne).professional
    duplicate = duplicate_of_jeanne(world)
    days_ago = 30 if newer == "duplicate's" else 500
    gp_services.gp_declare(
        by=Actor.system("HL7 370000481"),
        patient=duplicate,
        professional=bernard,
        started_on=timezone.localdate() - dt.timedelta(days=days_ago),
        source="hl7",
        establishment=world.tours,
    )

    patient_merge(source=duplicate, target=jeanne, by=Actor.system("tests"))

    gp, member = (bernard, lemoine) if newer == "duplicate's" else (lemoine, bernard)
    assert _current_gp(jeanne).professional == gp
    # The other GP stays in her care team as a member: he keeps the record, not the title.
    assert CareRelationship.objects.filter(
        patient=jeanne, professional=member, role=CareRole.CARE_TEAM, ended_at__isnull=True
    ).exists()
    for professional in (bernard, lemoine):
        assert patients_visible_to(professional.user).filter(pk=jeanne.pk).exists()
    if newer == "duplicate's":
        ended = CareRelationship.objects.get(patient=jeanne, professional=lemoine, role=CareRole.GP)
        assert ended.end_reason == "another GP declared"
        assert AuditEvent.objects.filter(
            patient=jeanne,
            detail__revoked_from=lemoine.user.email,
            detail__gp_declared=bernard.rpps,
        ).exists()
