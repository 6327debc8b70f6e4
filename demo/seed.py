"""Demo data for Région Centre-Val de Loire: establishments, professionals, patients, care.

Idempotent: every row is found by its natural key (FINESS, e-mail, INS or IPP) before it
is created, so a second run changes nothing. Patients carry test INS only (test OIDs
1.2.250.1.213.1.4.10 and .11); RPPS numbers are in the 997… test range; every name is
invented.

``manage.py seed_demo`` runs :func:`seed_demo`: this data, then each domain's on it
(``demo.imaging``, ``demo.rcp``, ``demo.expertise``).
"""

import contextlib
import datetime as dt
import random

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone

from portal import roles, services
from portal.administration import role_grant_by_system
from portal.audit import Actor
from portal.identifiers import ins_key, luhn_complete
from portal.models import (
    Affiliation,
    CareRelationship,
    CareRole,
    Establishment,
    GpDeclarationSource,
    IdentityConflict,
    IdentityConflictSource,
    IdentityStatus,
    InsOid,
    Profession,
    Professional,
    Sex,
    Specialty,
    User,
)

DEMO_PASSWORD = "mirc-demo-2026"  # noqa: S105 - printed for the local demo, never used elsewhere
# Roles of the portal (portal.roles) held by the demo's people, besides those their profession
# brings (the DPO, identity vigilance): the coordinator of CHRU de Tours runs the region's
# administration; the coordinator of CHR d'Orléans administers his establishment.
DEMO_ROLES = {
    "j.perrin": [roles.REGIONAL_ADMIN],
    # Orléans' administrator is its director too: its imaging indicators (imaging.apps).
    "k.haddad": [roles.ESTABLISHMENT_ADMIN, "establishment_director"],
}
ROLE_OF_PROFESSION = {
    Profession.DATA_PROTECTION: roles.DATA_PROTECTION,
    Profession.IDENTITY_VIGILANCE: roles.IDENTITY_VIGILANCE,
}

# name, FINESS, city, kind, DICOM IssuerOfPatientID, IPP prefix
ESTABLISHMENTS = [
    ("CHRU de Tours", "370000481", "Tours", "chu", "CHRU-TOURS", "T"),
    ("CHR d'Orléans", "450000088", "Orléans", "chr", "CHR-ORLEANS", "O"),
    ("Centre hospitalier Jacques-Cœur de Bourges", "180000028", "Bourges", "ch", "CH-BOURGES", "B"),
    ("Hôpitaux de Chartres", "280000134", "Chartres", "ch", "CH-CHARTRES", "C"),
    ("Clinique des Bords de Loire (démo)", "410009990", "Blois", "clinique", "CLIN-BLOIS", "K"),
    (
        "Maison de santé pluriprofessionnelle de Vierzon (démo)",
        "180009993",
        "Vierzon",
        "cabinet",
        "MSP-VIERZON",
        "V",
    ),
]

# MSH-4 of the demo establishments' HL7 feeds when it is not the FINESS (portal.hl7): the
# code their patient administration system sends. The others send their FINESS.
HL7_SENDING_FACILITIES = {"370000481": "CHRUT_GAM", "180000028": "CHB_GAM"}

# key, title, first name, last name, profession, specialty, FINESS list (first is primary)
PROFESSIONALS = [
    ("c.martin", "Dr", "Claire", "Martin", "medecin", Specialty.MEDICAL_ONCOLOGY, ["370000481"]),
    (
        "a.rousseau",
        "Pr",
        "Antoine",
        "Rousseau",
        "medecin",
        Specialty.THORACIC_SURGERY,
        ["370000481"],
    ),
    ("h.bertrand", "Dr", "Hélène", "Bertrand", "medecin", Specialty.RADIOTHERAPY, ["370000481"]),
    ("j.moreau", "Dr", "Julien", "Moreau", "medecin", Specialty.RADIOLOGY, ["370000481"]),
    ("s.girard", "Dr", "Sophie", "Girard", "medecin", Specialty.PATHOLOGY, ["370000481"]),
    ("m.garnier", "Dr", "Marc", "Garnier", "medecin", Specialty.NUCLEAR_MEDICINE, ["370000481"]),
    ("n.faure", "Dr", "Nicolas", "Faure", "medecin", Specialty.PULMONOLOGY, ["450000088"]),
    (
        "i.lambert",
        "Dr",
        "Isabelle",
        "Lambert",
        "medecin",
        Specialty.GASTROENTEROLOGY,
        ["450000088"],
    ),
    (
        "t.mercier",
        "Dr",
        "Thomas",
        "Mercier",
        "medecin",
        Specialty.DIGESTIVE_SURGERY,
        ["450000088", "410009990"],
    ),
    ("c.dubois", "Dr", "Camille", "Dubois", "medecin", Specialty.MEDICAL_ONCOLOGY, ["450000088"]),
    ("p.lefevre", "Dr", "Paul", "Lefèvre", "medecin", Specialty.RADIOLOGY, ["180000028"]),
    ("e.chevalier", "Dr", "Élodie", "Chevalier", "medecin", Specialty.RADIOLOGY, ["280000134"]),
    ("m.petit", "Dr", "Marion", "Petit", "medecin", Specialty.GYNECOLOGY_OBSTETRICS, ["370000481"]),
    ("l.fontaine", "Dr", "Laure", "Fontaine", "medecin", Specialty.FETAL_MEDICINE, ["370000481"]),
    ("h.blanc", "Dr", "Hugo", "Blanc", "medecin", Specialty.PEDIATRICS_NEONATOLOGY, ["370000481"]),
    ("a.roux", "Dr", "Anne", "Roux", "medecin", Specialty.GENETICS, ["370000481"]),
    ("v.carpentier", "Dr", "Vincent", "Carpentier", "medecin", Specialty.UROLOGY, ["410009990"]),
    ("p.lemoine", "Dr", "Pierre", "Lemoine", "medecin", Specialty.GENERAL_PRACTICE, ["180009993"]),
    ("s.benali", "Dr", "Sarah", "Benali", "medecin", Specialty.GENERAL_PRACTICE, ["180009993"]),
    ("j.perrin", "Mme", "Julie", "Perrin", "coordinateur", "", ["370000481"]),
    ("k.haddad", "M.", "Karim", "Haddad", "coordinateur", "", ["450000088"]),
    ("n.simon", "Mme", "Nathalie", "Simon", "dpo", "", ["370000481"]),
    ("m.robin", "Mme", "Martine", "Robin", "identitovigilance", "", ["370000481"]),
]
ADMIN_EMAIL = "admin@mirc.test"

# Care groups: referring doctor, care team, main establishment, sex constraint.
CARE_GROUPS = [
    (
        "thoracic",
        "c.martin",
        ["a.rousseau", "h.bertrand", "j.moreau", "s.girard"],
        "370000481",
        None,
    ),
    ("digestive", "c.dubois", ["t.mercier", "i.lambert", "p.lefevre"], "450000088", None),
    ("perinatal", "m.petit", ["l.fontaine", "h.blanc", "a.roux"], "370000481", Sex.FEMALE),
    ("pulmonary", "n.faure", ["e.chevalier", "m.garnier"], "280000134", None),
    ("urology", "v.carpentier", ["j.moreau"], "410009990", Sex.MALE),
]
GROUP_SIZES = {"thoracic": 12, "digestive": 10, "perinatal": 8, "pulmonary": 6, "urology": 4}

LAST_NAMES = [
    "Durand",
    "Lefort",
    "Moulin",
    "Chauvin",
    "Barbier",
    "Renaud",
    "Gauthier",
    "Perrot",
    "Leclerc",
    "Marchand",
    "Boucher",
    "Tessier",
    "Charpentier",
    "Brunet",
    "Royer",
    "Picard",
    "Collin",
    "Aubert",
    "Hubert",
    "Maillard",
    "Roy",
    "Fleury",
    "Lacroix",
    "Gilbert",
    "Caron",
    "Bouvier",
    "Leroux",
    "Guillot",
    "Poirier",
    "Rolland",
    "Huet",
    "Pasquier",
    "Delorme",
    "Vasseur",
    "Besnard",
    "Cordier",
    "Bailly",
    "Langlois",
    "Rivière",
    "Ferrand",
]
FIRST_NAMES = {
    Sex.MALE: [
        "Jean-Pierre",
        "Michel",
        "Alain",
        "Gérard",
        "Bernard",
        "Daniel",
        "Patrick",
        "Christian",
        "Jacques",
        "André",
        "Philippe",
        "Serge",
    ],
    Sex.FEMALE: [
        "Monique",
        "Françoise",
        "Catherine",
        "Sylvie",
        "Nathalie",
        "Isabelle",
        "Chloé",
        "Léa",
        "Camille",
        "Manon",
        "Inès",
        "Émilie",
    ],
}
SECOND_NAMES = {
    Sex.MALE: ["Louis", "Marie", "Henri", "Paul"],
    Sex.FEMALE: ["Marie", "Anne", "Jeanne", "Louise"],
}
BIRTH_PLACES = ["37261", "45234", "18033", "28085", "41018", "36044", "75056", "99139", "99350"]


def rpps_for(index: int) -> str:
    return luhn_complete(f"9970{index:06d}")


def test_ins(
    *, sex: str, birth_date: dt.date, place: str, order: int, nia: bool
) -> tuple[str, str]:
    # Sex, year, month, birth place (département + commune, or 99 + country), order, key.
    first13 = f"{1 if sex == Sex.MALE else 2}{birth_date:%y%m}{place}{order:03d}"
    return first13 + ins_key(first13), (InsOid.NIA_TEST if nia else InsOid.NIR_TEST)


def seed_demo(*, stdout, style, portal_only: bool = False) -> None:
    """The demo: the portal's establishments, people and patients, then each domain's data."""
    actor = Actor.system("seed_demo")
    with transaction.atomic():
        establishments = _establishments()
        professionals = _professionals(establishments)
        admin_secret = _admin()
        patients = _patients(establishments, professionals, actor)
        _identity_conflict(establishments, patients, actor)
    # The region's national directory, imported as the real extract is (demo/directory.py).
    from demo import directory

    directory.seed(stdout=stdout)
    if not portal_only:
        # Imported here, not at the top: demo.expertise takes its accounts' password and
        # RPPS numbers from this module.
        from demo import expertise, imaging, rcp

        # Lower layers first: the meetings and the requests attach the demo studies.
        for seed_domain in (imaging.seed, rcp.seed, expertise.seed):
            seed_domain(stdout=stdout)
        # The past year of the region's imaging (demo/activity.py): on fictitious patients
        # of their own, so that the indicators have a year to show and the personas' pages
        # stay as they are.
        from demo import activity

        activity.seed(stdout=stdout)
        # The programme's indicators of the data just made (what the nightly job computes),
        # so that its page shows them at once. Once only: a second seed makes no new data,
        # and each run of the job leaves its trace in the audit trail.
        from django.core.management import call_command

        from imaging.models import ActivityMonthState

        if not ActivityMonthState.objects.exists():
            call_command("activity_compute", stdout=stdout)
            # The past months the job just closed get their statements, as the beat's
            # imaging.issue_statements would after it (a no-op once they are issued).
            from imaging import metering

            metering.statements_issue()
    _print_summary(stdout, style, establishments, professionals, patients, admin_secret)


def _establishments() -> dict[str, Establishment]:
    result = {}
    for name, finess, city, kind, issuer, _prefix in ESTABLISHMENTS:
        result[finess], _ = Establishment.objects.update_or_create(
            finess=finess,
            defaults={
                "name": name,
                "city": city,
                "kind": kind,
                "patient_id_issuer": issuer,
                "hl7_sending_facility": HL7_SENDING_FACILITIES.get(finess, ""),
            },
        )
    return result


def demo_professional(
    *, login, title, first, last, profession, specialty, index, password_hash
) -> Professional:
    """The demo account ``login``@mirc.test (verified address, the demo password) and its
    professional record; RPPS numbers in the test range for physicians only. Found by e-mail
    before it is made: a second seed changes nothing."""
    email = f"{login}@mirc.test"
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(email, None, first_name=first, last_name=last)
        user.password = password_hash
        user.save(update_fields=["password"])
    EmailAddress.objects.get_or_create(
        user=user, email=email, defaults={"verified": True, "primary": True}
    )
    professional, _ = Professional.objects.update_or_create(
        user=user,
        defaults={
            "title": title,
            "profession": profession,
            "specialty": specialty,
            "rpps": rpps_for(index) if profession == Profession.PHYSICIAN else None,
        },
    )
    return professional


def _professionals(establishments) -> dict[str, Professional]:
    # One slow hash for every demo account instead of one per account.
    password_hash = make_password(DEMO_PASSWORD)
    seeding = Actor.system("seed_demo")
    result = {}
    for index, (key, title, first, last, profession, specialty, finess_list) in enumerate(
        PROFESSIONALS, start=1
    ):
        professional = demo_professional(
            login=key,
            title=title,
            first=first,
            last=last,
            profession=profession,
            specialty=specialty,
            index=index,
            password_hash=password_hash,
        )
        user = professional.user
        for position, finess in enumerate(finess_list):
            Affiliation.objects.get_or_create(
                professional=professional,
                establishment=establishments[finess],
                defaults={"is_primary": position == 0},
            )
        role_codes = list(DEMO_ROLES.get(key, []))
        if profession in ROLE_OF_PROFESSION:
            role_codes.append(ROLE_OF_PROFESSION[profession])
        for role_code in role_codes:
            role_grant_by_system(role_code=role_code, holder=user, by=seeding)
        result[key] = professional
    return result


def _admin() -> str | None:
    admin = User.objects.filter(email=ADMIN_EMAIL).first()
    if admin is None:
        admin = User.objects.create_superuser(
            ADMIN_EMAIL, DEMO_PASSWORD, first_name="Admin", last_name="Portail"
        )
        EmailAddress.objects.create(user=admin, email=ADMIN_EMAIL, verified=True, primary=True)
    if not Authenticator.objects.filter(user=admin, type=Authenticator.Type.TOTP).exists():
        secret = generate_totp_secret()
        TOTP.activate(admin, secret)
        return secret
    return None


def _patients(establishments, professionals, actor) -> list:
    rng = random.Random(2026)  # fixed seed: the same people on every run
    prefixes = {finess: prefix for _n, finess, _c, _k, _i, prefix in ESTABLISHMENTS}
    patients = []
    number = 0
    gps = [professionals["p.lemoine"], professionals["s.benali"]]
    for group, referring_key, team_keys, finess, sex_only in CARE_GROUPS:
        for _ in range(GROUP_SIZES[group]):
            sex = sex_only or rng.choice([Sex.MALE, Sex.FEMALE])
            if group == "perinatal":
                birth_date = dt.date(
                    rng.randint(1988, 2001), rng.randint(1, 12), rng.randint(1, 28)
                )
            else:
                birth_date = dt.date(
                    rng.randint(1940, 1975), rng.randint(1, 12), rng.randint(1, 28)
                )
            place = rng.choice(BIRTH_PLACES)
            first_names = f"{rng.choice(FIRST_NAMES[sex])} {rng.choice(SECOND_NAMES[sex])}"
            birth_name = LAST_NAMES[number % len(LAST_NAMES)]
            roll = rng.random()
            status = (
                IdentityStatus.QUALIFIED
                if roll < 0.6
                else IdentityStatus.VALIDATED
                if roll < 0.75
                else IdentityStatus.RETRIEVED
                if roll < 0.9
                else IdentityStatus.PROVISIONAL
            )
            ins, oid = ("", "")
            if status != IdentityStatus.PROVISIONAL:
                ins, oid = test_ins(
                    sex=sex,
                    birth_date=birth_date,
                    place=place,
                    order=100 + number,
                    nia=place.startswith("99"),
                )
            used_name = ""
            if sex == Sex.FEMALE and group != "perinatal" and rng.random() < 0.4:
                used_name = LAST_NAMES[(number + 7) % len(LAST_NAMES)]
            establishment = establishments[finess]
            result = services.patient_register(
                traits=services.PatientTraits(
                    birth_name=birth_name,
                    first_names=first_names,
                    sex=sex,
                    birth_date=birth_date,
                    birth_place_code=place,
                ),
                used_name=used_name,
                ins_matricule=ins,
                ins_oid=oid,
                identity_status=status,
                establishment=establishment,
                ipp=f"{prefixes[finess]}{200000 + number}",
                source=IdentityConflictSource.IMPORT,
                by=actor,
            )
            patient = result.patient
            services.care_relationship_add(
                patient=patient,
                professional=professionals[referring_key],
                role=CareRole.REFERRING,
                establishment=establishment,
                by=actor,
            )
            for key in team_keys:
                services.care_relationship_add(
                    patient=patient,
                    professional=professionals[key],
                    role=CareRole.CARE_TEAM,
                    establishment=establishment,
                    by=actor,
                )
            if number % 5 != 4:  # some patients have no declared GP
                services.care_relationship_add(
                    patient=patient,
                    professional=gps[number % 2],
                    role=CareRole.GP,
                    by=actor,
                )
                # Declared with the patient's Assurance Maladie form some time ago, as the
                # patient page shows it ("déclaré depuis le …, par le portail"); declared
                # without notifying the GP again, who has known these patients for years.
                CareRelationship.objects.filter(
                    patient=patient, role=CareRole.GP, ended_at__isnull=True
                ).update(
                    started_on=timezone.localdate() - dt.timedelta(days=90 + 61 * number),
                    source=GpDeclarationSource.PORTAL,
                )
            patients.append(patient)
            number += 1
    return patients


def _identity_conflict(establishments, patients, actor):
    """An images feed that sends a known IPP with another birth date: flagged, not merged."""
    patient = patients[0]
    identifier = patient.identifiers.select_related("establishment").first()
    if IdentityConflict.objects.filter(patient=patient).exists() or identifier is None:
        return
    with contextlib.suppress(services.IdentityConflictError):
        services.patient_register(
            traits=services.PatientTraits(
                birth_name=patient.birth_name,
                first_names=patient.first_names,
                sex=patient.sex,
                birth_date=patient.birth_date.replace(day=min(patient.birth_date.day + 1, 28)),
                birth_place_code=patient.birth_place_code,
            ),
            establishment=identifier.establishment,
            ipp=identifier.value,
            source=IdentityConflictSource.DICOM,
            by=actor,
        )


def _print_summary(stdout, style, establishments, professionals, patients, admin_secret):
    out = stdout
    out.write(
        style.SUCCESS(
            f"Demo data: {len(establishments)} establishments, "
            f"{len(professionals)} professionals, {len(patients)} patients."
        )
    )
    out.write(f"\nDemo logins (password for all: {DEMO_PASSWORD}):")
    for key, title, first, last, _profession, specialty, finess_list in PROFESSIONALS:
        label = (
            Specialty(specialty).label if specialty else professionals[key].get_profession_display()
        )
        out.write(
            f"  {key}@mirc.test".ljust(30) + f"{title} {first} {last} — {label}, "
            f"{establishments[finess_list[0]].name}"
        )
    out.write(f"  {ADMIN_EMAIL}".ljust(30) + "administrator (staff, TOTP second factor)")
    if admin_secret:
        out.write(
            f"  TOTP secret of {ADMIN_EMAIL}: {admin_secret} (add it to an authenticator app)"
        )
    out.write(f"  Current admin code: .venv/bin/python manage.py demo_totp {ADMIN_EMAIL}")
