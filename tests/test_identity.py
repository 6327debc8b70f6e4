"""Registering patients without ever merging two people: the identity-vigilance stories.

Jeanne Dupont (world.patient) is known with a qualified INS and the CHRU de Tours IPP
T100001; Jean-Pierre Durand (world.other_patient) with the CH de Bourges IPP B100002. The
oncologist registers people, an identity feed sends some, and the two must never be mixed.
"""

import datetime as dt
from dataclasses import asdict

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    CareRelationship,
    CareRole,
    IdentityConflict,
    IdentityConflictSource,
    IdentityStatus,
    InsOid,
    Patient,
    PatientIdentifier,
)
from portal.selectors import patients_visible_to
from portal.services import IdentityConflictError, PatientTraits, patient_register
from tests.conftest import client_for, make_patient

# Hélène Lefèvre, born 25/10/1962 in Bourges (18033): a patient nobody has registered yet.
HELENE_FIRST13 = "2621018033004"
HELENE_INS = HELENE_FIRST13 + f"{97 - int(HELENE_FIRST13) % 97:02d}"


def helene(**changes) -> PatientTraits:
    traits = {
        "birth_name": "Lefèvre",
        "first_names": "Hélène Agnès",
        "sex": "F",
        "birth_date": dt.date(1962, 10, 25),
        "birth_place_code": "18033",
    }
    return PatientTraits(**{**traits, **changes})


def jeanne(**changes) -> PatientTraits:
    """Jeanne Dupont's five traits, as the world fixture registered them."""
    traits = {
        "birth_name": "Dupont",
        "first_names": "Jeanne Marie",
        "sex": "F",
        "birth_date": dt.date(1956, 3, 12),
        "birth_place_code": "37261",
    }
    return PatientTraits(**{**traits, **changes})


def as_user(professional) -> Actor:
    return Actor(user=professional.user)


def last_event_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def events_since(pk: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=pk).order_by("pk"))


def database_snapshot():
    """What a refused registration must leave as it was."""
    return (
        list(Patient.objects.order_by("pk").values()),
        list(
            PatientIdentifier.objects.order_by("pk").values_list(
                "patient", "establishment", "value"
            )
        ),
        list(
            CareRelationship.objects.order_by("pk").values_list("patient", "professional", "role")
        ),
    )


# --- The service -----------------------------------------------------------------------------


def test_the_oncologist_registers_a_new_patient_and_the_creation_is_audited(world):
    mark = last_event_pk()

    result = patient_register(
        traits=helene(),
        ins_matricule=HELENE_INS,
        ins_oid=InsOid.NIR_TEST,
        identity_status=IdentityStatus.QUALIFIED,
        by=as_user(world.oncologist),
    )

    assert result.created
    stored = Patient.objects.get(pk=result.patient.pk)
    assert (stored.birth_name, stored.first_names, stored.sex) == ("Lefèvre", "Hélène Agnès", "F")
    assert (stored.birth_date, stored.birth_place_code) == (dt.date(1962, 10, 25), "18033")
    assert (stored.ins_matricule, stored.ins_oid) == (HELENE_INS, InsOid.NIR_TEST)
    events = events_since(mark)
    assert [(e.event_id, e.action, e.outcome) for e in events] == [
        (AuditEventId.PATIENT_RECORD, AuditAction.CREATE, AuditOutcome.SUCCESS)
    ]
    assert events[0].patient == stored
    assert events[0].actor == world.oncologist.user
    assert events[0].actor_rpps == world.oncologist.rpps
    # Registering is not being in the care team: without a role, the record stays closed.
    assert stored not in patients_visible_to(world.oncologist.user)


def test_the_same_ins_and_traits_typed_without_accents_designate_the_known_patient(world):
    known = make_patient(
        birth_name="Lefèvre",
        first_names="Hélène Agnès",
        birth_date=dt.date(1962, 10, 25),
        place="18033",
        order=4,
    )
    before = database_snapshot()
    conflicts = IdentityConflict.objects.count()

    result = patient_register(
        traits=helene(birth_name="LEFEVRE", first_names="helene agnes"),
        ins_matricule=known.ins_matricule,
        ins_oid=known.ins_oid,
        by=as_user(world.oncologist),
    )

    assert not result.created
    assert result.patient == known
    assert database_snapshot() == before  # no second patient, the accents are not overwritten
    assert IdentityConflict.objects.count() == conflicts
    assert not AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, patient=known
    ).exists()


def test_a_known_ins_with_other_traits_is_flagged_and_attaches_nothing(world):
    before = database_snapshot()
    mark = last_event_pk()

    with pytest.raises(IdentityConflictError) as raised:
        patient_register(
            traits=jeanne(first_names="Jeanne", birth_date=dt.date(1956, 3, 21)),
            ins_matricule=world.patient.ins_matricule,
            ins_oid=world.patient.ins_oid,
            establishment=world.bourges,
            ipp="B777777",
            by=as_user(world.oncologist),
        )

    conflict = IdentityConflict.objects.get()
    assert raised.value.conflict == conflict
    assert conflict.patient == world.patient
    assert conflict.matched_on == "ins"
    assert conflict.source == IdentityConflictSource.MANUAL
    assert set(conflict.differing_traits) == {"first_names", "birth_date"}
    assert conflict.reported_by == world.oncologist.user
    assert conflict.resolved_at is None
    events = events_since(mark)
    assert [(e.event_id, e.action, e.outcome) for e in events] == [
        (AuditEventId.SECURITY_ALERT, AuditAction.EXECUTE, AuditOutcome.MINOR_FAILURE)
    ]
    assert events[0].patient == world.patient
    assert set(events[0].detail["differing"]) == {"first_names", "birth_date"}
    # Jeanne's record is untouched, nobody new exists, the IPP went nowhere.
    assert database_snapshot() == before
    assert not PatientIdentifier.objects.filter(value="B777777").exists()


@pytest.mark.parametrize("source", [IdentityConflictSource.MANUAL, IdentityConflictSource.IMPORT])
def test_a_known_ipp_with_other_traits_is_flagged_and_attaches_nothing(world, source):
    # Tours sends IPP T100001 — Jeanne Dupont's — for a woman called Hélène Lefèvre.
    before = database_snapshot()
    mark = last_event_pk()

    with pytest.raises(IdentityConflictError):
        patient_register(
            traits=helene(),
            establishment=world.tours,
            ipp="T100001",
            ins_matricule=HELENE_INS,
            ins_oid=InsOid.NIR_TEST,
            source=source,
            by=as_user(world.oncologist),
        )

    conflict = IdentityConflict.objects.get()
    assert (conflict.patient, conflict.matched_on, conflict.source) == (
        world.patient,
        "ipp",
        source,
    )
    assert conflict.establishment == world.tours
    # The five traits disagree, and so does the INS the sender gives for that IPP.
    assert set(conflict.differing_traits) == {
        "birth_name",
        "first_names",
        "birth_date",
        "birth_place_code",
        "ins",
    }
    assert conflict.incoming_traits["ipp"] == "T100001"
    assert [(e.event_id, e.patient) for e in events_since(mark)] == [
        (AuditEventId.SECURITY_ALERT, world.patient)
    ]
    # No Hélène, and Jeanne did not receive Hélène's INS.
    assert database_snapshot() == before
    assert not Patient.objects.filter(ins_matricule=HELENE_INS).exists()


def test_a_manual_registration_never_adds_an_ipp_to_a_known_patient(world):
    result = patient_register(
        traits=jeanne(),
        ins_matricule=world.patient.ins_matricule,
        ins_oid=world.patient.ins_oid,
        establishment=world.bourges,
        ipp="B555555",
        source=IdentityConflictSource.MANUAL,
        by=as_user(world.outsider),
    )

    assert result.patient == world.patient and not result.created
    assert not PatientIdentifier.objects.filter(value="B555555").exists()
    assert list(world.patient.identifiers.values_list("value", flat=True)) == ["T100001"]


def test_an_identity_feed_completes_the_ipps_of_a_known_patient(world):
    result = patient_register(
        traits=jeanne(birth_name="DUPONT"),
        ins_matricule=world.patient.ins_matricule,
        ins_oid=world.patient.ins_oid,
        establishment=world.bourges,
        ipp="B555555",
        source=IdentityConflictSource.IMPORT,
        by=Actor.system("identity feed"),
    )

    assert result.patient == world.patient and not result.created
    assert sorted(world.patient.identifiers.values_list("establishment__finess", "value")) == [
        ("180000028", "B555555"),
        ("370000481", "T100001"),
    ]
    assert Patient.objects.count() == 2


def test_an_identity_feed_whose_ins_and_ipp_designate_two_people_is_flagged(world):
    # The feed says: Jeanne Dupont (her INS, her traits) is IPP B100002 at Bourges. But
    # B100002 is Jean-Pierre Durand's IPP, and Durand's traits differ from Jeanne's.
    with pytest.raises(IdentityConflictError):
        patient_register(
            traits=jeanne(),
            ins_matricule=world.patient.ins_matricule,
            ins_oid=world.patient.ins_oid,
            establishment=world.bourges,
            ipp="B100002",
            source=IdentityConflictSource.IMPORT,
            by=Actor.system("identity feed"),
        )

    # Both records are flagged: each identifier designates someone else than the other.
    on_durand = IdentityConflict.objects.get(patient=world.other_patient)
    assert on_durand.matched_on == "ipp"
    assert {"birth_name", "identifiers"} <= set(on_durand.differing_traits)
    on_jeanne = IdentityConflict.objects.get(patient=world.patient)
    assert on_jeanne.matched_on == "ins"
    assert on_jeanne.differing_traits == ["identifiers"]
    assert PatientIdentifier.objects.get(value="B100002").patient == world.other_patient


def test_a_qualified_identity_without_its_ins_is_refused(world):
    before = database_snapshot()
    mark = last_event_pk()

    with pytest.raises(ValidationError):
        patient_register(
            traits=helene(), identity_status=IdentityStatus.QUALIFIED, by=as_user(world.oncologist)
        )

    assert database_snapshot() == before
    assert events_since(mark) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"identity_status": IdentityStatus.QUALIFIED, "ins_matricule": "", "ins_oid": ""},
        {"identity_status": IdentityStatus.RETRIEVED, "ins_matricule": HELENE_INS, "ins_oid": ""},
    ],
    ids=["qualified-without-ins", "matricule-without-oid"],
)
def test_the_database_itself_refuses_an_ins_rule_break(world, fields):
    # A script or a data migration bypassing the service still cannot store it.
    with pytest.raises(IntegrityError), transaction.atomic():
        Patient.objects.create(**{**asdict(helene()), "name_search": "LEFEVRE HELENE", **fields})

    assert not Patient.objects.filter(birth_name="Lefèvre").exists()


@pytest.mark.parametrize(
    "status,shared",
    [
        (IdentityStatus.QUALIFIED, True),
        (IdentityStatus.VALIDATED, False),
        (IdentityStatus.RETRIEVED, False),
        (IdentityStatus.PROVISIONAL, False),
    ],
)
def test_only_a_qualified_identity_shares_its_ins(world, status, shared):
    patient = patient_register(
        traits=helene(),
        ins_matricule=HELENE_INS,
        ins_oid=InsOid.NIR_TEST,
        identity_status=status,
        by=as_user(world.oncologist),
    ).patient
    patient.refresh_from_db()

    assert patient.ins_shareable is shared
    assert patient.ins_for_output() == ((HELENE_INS, InsOid.NIR_TEST) if shared else None)


def test_registering_with_a_role_opens_the_record_to_its_author_in_one_event(world):
    mark = last_event_pk()

    patient = patient_register(
        traits=helene(),
        establishment=world.tours,
        ipp="T200002",
        care_role=CareRole.REFERRING,
        by=as_user(world.oncologist),
    ).patient

    assert patient in patients_visible_to(world.oncologist.user)
    assert patient not in patients_visible_to(world.surgeon.user)
    relationship = CareRelationship.objects.get(patient=patient)
    assert (relationship.professional, relationship.role) == (world.oncologist, CareRole.REFERRING)
    assert relationship.created_by == world.oncologist.user
    events = events_since(mark)
    assert [(e.event_id, e.action) for e in events] == [
        (AuditEventId.PATIENT_RECORD, AuditAction.CREATE)
    ]
    assert events[0].detail["care_role"] == CareRole.REFERRING


def test_registering_a_known_identity_with_a_role_does_not_open_that_record(world):
    # The surgeon types in Jeanne Dupont's exact identity: she exists, but he is not her doctor.
    result = patient_register(
        traits=jeanne(),
        ins_matricule=world.patient.ins_matricule,
        ins_oid=world.patient.ins_oid,
        care_role=CareRole.REFERRING,
        by=as_user(world.surgeon),
    )

    assert not result.created
    assert world.patient not in patients_visible_to(world.surgeon.user)
    assert not CareRelationship.objects.filter(professional=world.surgeon).exists()


# --- The registration page -------------------------------------------------------------------

REGISTER_URL = reverse("patient-register")


def form_data(**changes) -> dict:
    data = {
        "birth_name": "Lefèvre",
        "first_names": "Hélène Agnès",
        "used_name": "",
        "used_first_name": "",
        "sex": "F",
        "birth_date": "1962-10-25",
        "birth_place_code": "18033",
        "ins_matricule": HELENE_INS,
        "ins_oid": InsOid.NIR_TEST,
        "identity_status": IdentityStatus.QUALIFIED,
        "establishment": "",
        "ipp": "",
        "role": CareRole.REFERRING,
    }
    return {**data, **changes}


def test_the_oncologist_registers_a_patient_and_lands_on_her_record(world):
    client = client_for(world.oncologist.user)

    response = client.post(REGISTER_URL, form_data(establishment=world.tours.pk, ipp="T200002"))

    patient = Patient.objects.get(ins_matricule=HELENE_INS)
    assert response.status_code == 302
    assert response["Location"] == reverse("patient-detail", args=[patient.pk])
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "LEFÈVRE Hélène" in page.content.decode()
    assert patient.identity_status == IdentityStatus.QUALIFIED
    assert list(patient.identifiers.values_list("value", flat=True)) == ["T200002"]
    assert CareRelationship.objects.filter(
        patient=patient, professional=world.oncologist, role=CareRole.REFERRING
    ).exists()


def test_a_conflicting_identity_is_explained_and_creates_nothing(world):
    before = database_snapshot()

    # Jeanne Dupont's INS, typed for somebody else.
    response = client_for(world.oncologist.user).post(
        REGISTER_URL,
        form_data(ins_matricule=world.patient.ins_matricule, ins_oid=world.patient.ins_oid),
    )

    assert response.status_code == 200
    messages = list(get_messages(response.wsgi_request))
    assert [m.level_tag for m in messages] == ["error"]
    assert "vigilance" in str(messages[0])  # identity-vigilance / identitovigilance
    assert "vigilance" in response.content.decode()
    assert database_snapshot() == before
    assert IdentityConflict.objects.filter(patient=world.patient).count() == 1
    # The page does not reveal whose record it is.
    assert "Dupont" not in response.content.decode()
    assert "DUPONT" not in response.content.decode()


def test_re_registering_a_known_identity_does_not_open_the_record(world):
    client = client_for(world.surgeon.user)

    response = client.post(
        REGISTER_URL,
        form_data(
            birth_name="Dupont",
            first_names="Jeanne Marie",
            birth_date="1956-03-12",
            birth_place_code="37261",
            ins_matricule=world.patient.ins_matricule,
        ),
    )

    assert response.status_code == 200
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["warning"]
    assert Patient.objects.count() == 2
    assert client.get(reverse("patient-detail", args=[world.patient.pk])).status_code == 404


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"birth_place_code": "3726"}, "birth_place_code"),
        ({"birth_place_code": "TOURS"}, "birth_place_code"),
        ({"ins_oid": "", "identity_status": IdentityStatus.RETRIEVED}, "__all__"),
        (
            {"ins_matricule": HELENE_INS[:13] + ("01" if HELENE_INS[13:] != "01" else "02")},
            "ins_matricule",
        ),
    ],
    ids=["insee-code-too-short", "insee-code-not-a-code", "ins-without-oid", "ins-wrong-key"],
)
def test_an_invalid_registration_is_shown_again_with_its_errors(world, changes, field):
    before = database_snapshot()
    mark = last_event_pk()

    response = client_for(world.oncologist.user).post(REGISTER_URL, form_data(**changes))

    assert response.status_code == 200
    form = response.context["form"]
    assert field in form.errors
    assert 'role="alert"' in response.content.decode()
    assert database_snapshot() == before
    assert not AuditEvent.objects.filter(pk__gt=mark, event_id=AuditEventId.PATIENT_RECORD).exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_the_coordinator_without_rpps_is_turned_away_from_registration(world, method):
    before = database_snapshot()

    response = getattr(client_for(world.coordinator.user), method)(REGISTER_URL, form_data())

    assert response.status_code == 302
    assert response["Location"] == reverse("patient-list")
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["error"]
    assert database_snapshot() == before


def test_a_patient_with_very_long_names_never_gets_a_server_error(world):
    # Every field is within its own limit (100, 100, 200, 100 characters) ...
    names = {
        "birth_name": "de La Rochefoucauld-Montmorency-Laval d'Harcourt-Beauvau",
        "used_name": "de Clermont-Tonnerre-Beauvau-Craon de Polignac-Choiseul",
        "first_names": (
            "Marie-Thérèse Louise-Élisabeth Charlotte-Antoinette Françoise-Joséphine "
            "Anne-Geneviève Marguerite-Victoire Isabelle-Clotilde Jeanne-Adélaïde "
            "Hortense-Eugénie Philippine-Aurore Gabrielle-Honorine"
        ),
        "used_first_name": "Marie-Thérèse",
    }
    # ... but together they exceed the 300 characters of Patient.name_search.
    assert sum(len(value) + 1 for value in names.values()) > 300
    before = database_snapshot()

    # Model-level errors on fields the form lacks (name_search) must not become a 500.
    response = client_for(world.oncologist.user).post(
        REGISTER_URL,
        form_data(
            **names, ins_matricule="", ins_oid="", identity_status=IdentityStatus.PROVISIONAL
        ),
    )

    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert response.context["form"].errors
        assert database_snapshot() == before


# --- The identity-vigilance team's review ------------------------------------------------------


def _conflict_on_jeanne(world) -> IdentityConflict:
    with pytest.raises(IdentityConflictError) as raised:
        patient_register(
            traits=jeanne(birth_date=dt.date(1956, 3, 21)),
            establishment=world.tours,
            ipp="T100001",
            source=IdentityConflictSource.DICOM,
            by=Actor.system("imaging import"),
        )
    return raised.value.conflict


def test_the_reviewer_sees_the_open_conflict_with_the_disagreeing_trait(world):
    conflict = _conflict_on_jeanne(world)
    page = client_for(world.identity_reviewer).get(reverse("identity-conflict-list"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "DUPONT Jeanne" in html
    assert "1956-03-21" in html and "1956-03-12" in html
    assert reverse("identity-conflict-resolve", args=[conflict.pk]) in html


def test_resolving_a_conflict_needs_a_note_and_happens_once(world):
    conflict = _conflict_on_jeanne(world)
    client = client_for(world.identity_reviewer)
    url = reverse("identity-conflict-resolve", args=[conflict.pk])

    client.post(url, {"resolution": "   "})
    conflict.refresh_from_db()
    assert conflict.resolved_at is None

    client.post(url, {"resolution": "Pièce d'identité vérifiée : erreur de saisie du PACS."})
    conflict.refresh_from_db()
    assert conflict.resolved_by == world.identity_reviewer
    resolved_at = conflict.resolved_at
    assert resolved_at is not None

    client.post(url, {"resolution": "again"})
    conflict.refresh_from_db()
    assert (conflict.resolved_at, conflict.resolution) == (
        resolved_at,
        "Pièce d'identité vérifiée : erreur de saisie du PACS.",
    )
    # Resolved conflicts leave the default list.
    html = client.get(reverse("identity-conflict-list")).content.decode()
    assert url not in html
