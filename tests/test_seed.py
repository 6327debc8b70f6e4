"""The demo data: realistic, test identifiers only, and the same after a second run."""

from django.core.management import call_command

from portal.identifiers import validate_ins_matricule, validate_rpps
from portal.models import (
    AuditEvent,
    CareRelationship,
    Establishment,
    InsOid,
    Patient,
    PatientIdentifier,
    Professional,
    User,
)
from portal.selectors import patients_visible_to


def _snapshot():
    return {
        "establishments": sorted(Establishment.objects.values_list("finess", "name")),
        "users": sorted(User.objects.values_list("email", "is_staff")),
        "professionals": sorted(
            Professional.objects.values_list("user__email", "rpps", "specialty")
        ),
        "patients": sorted(
            Patient.objects.values_list(
                "birth_name", "first_names", "birth_date", "ins_matricule", "identity_status"
            )
        ),
        "identifiers": sorted(PatientIdentifier.objects.values_list("value", flat=True)),
        "care": sorted(
            CareRelationship.objects.values_list(
                "patient__birth_name", "professional__user__email", "role", "ended_at"
            )
        ),
        "audit": AuditEvent.objects.count(),
    }


def test_seed_is_idempotent_and_realistic(db):
    # The shared data; the whole demo, imaging included, is seeded twice and compared by the
    # browser tests' demo server (tests/test_demo_browser.py), which needs it anyway.
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    first = _snapshot()
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    assert _snapshot() == first

    names = {name for _finess, name in first["establishments"]}
    assert {"CHRU de Tours", "CHR d'Orléans", "Hôpitaux de Chartres"} <= names
    assert any("Bourges" in name for name in names)
    assert 18 <= Professional.objects.count() <= 25
    assert 35 <= Patient.objects.count() <= 45
    specialties = set(Professional.objects.values_list("specialty", flat=True))
    assert {
        "oncologie_medicale",
        "radiologie",
        "anatomopathologie",
        "gynecologie_obstetrique",
        "medecine_foetale",
        "pediatrie_neonatologie",
        "genetique",
        "medecine_generale",
    } <= specialties


def test_demo_identities_are_test_identities_only(db):
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    oids = set(Patient.objects.exclude(ins_oid="").values_list("ins_oid", flat=True))
    assert oids <= {InsOid.NIR_TEST, InsOid.NIA_TEST}
    for matricule in Patient.objects.exclude(ins_matricule="").values_list(
        "ins_matricule", flat=True
    ):
        validate_ins_matricule(matricule)
    for rpps in Professional.objects.exclude(rpps=None).values_list("rpps", flat=True):
        validate_rpps(rpps)
        assert rpps.startswith("997"), "demo RPPS stay in the test range"


def test_every_demo_doctor_sees_their_patients_and_only_them(db):
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    oncologist = User.objects.get(email="c.martin@mirc.test")
    gp = User.objects.get(email="p.lemoine@mirc.test")
    coordinator = User.objects.get(email="j.perrin@mirc.test")
    admin = User.objects.get(email="admin@mirc.test")
    assert patients_visible_to(oncologist).count() >= 10
    assert patients_visible_to(gp).count() >= 10
    assert not patients_visible_to(coordinator).exists()
    assert not patients_visible_to(admin).exists()
    followed = set(
        CareRelationship.objects.filter(professional__user=oncologist).values_list(
            "patient_id", flat=True
        )
    )
    assert set(patients_visible_to(oncologist).values_list("pk", flat=True)) == followed


def test_demo_establishments_declare_how_they_connect(db):
    """The demo's gateways (make demo) know CH Bourges and CHRU Tours: calling AE titles, a
    PACS destination and the HL7 sending facility; seeding again changes nothing."""
    from demo.imaging import seed_declarations
    from imaging.models import CallingAETitle, DicomDeclaration

    call_command("seed_demo", "--force", "--portal-only", verbosity=0)
    seed_declarations()
    seed_declarations()
    titles = dict(
        CallingAETitle.objects.values_list("ae_title", "declaration__establishment__finess")
    )
    assert titles == {"CHB_DEMO": "180000028", "CHRUT_DEMO": "370000481"}
    pacs = DicomDeclaration.objects.values_list(
        "establishment__finess", "pacs_ae_title", "pacs_host"
    )
    assert sorted(pacs) == [
        ("180000028", "CHB_PACS", "127.0.0.1"),
        ("370000481", "CHRUT_PACS", "127.0.0.1"),
    ]
    facilities = dict(
        Establishment.objects.exclude(hl7_sending_facility="").values_list(
            "finess", "hl7_sending_facility"
        )
    )
    assert facilities == {"180000028": "CHB_GAM", "370000481": "CHRUT_GAM"}
