"""From the national directory to the portal's professionals (portal.directory_accounts): a
doctor found in the directory gets a professional and an account that only Pro Santé Connect
opens, affiliated to the portal's establishments where the directory says they practise, and
kept up to date by the later extracts."""

import pytest
from django.core import mail
from django.core.management import call_command

from portal.audit import Actor
from portal.directory_accounts import (
    NotInDirectory,
    active_person,
    has_placeholder_email,
    link_professional,
    refresh_linked_professionals,
    search,
)
from portal.directory_models import DirectoryImport, DirectoryPerson
from portal.mail import send_each
from portal.models import (
    Affiliation,
    AuditEvent,
    Profession,
    Professional,
    Specialty,
    User,
)
from portal.notifications import notify
from tests.builders import establishment, user
from tests.test_directory_import import CHRU, CLINIC, line, write

pytestmark = pytest.mark.django_db

ADMIN = Actor.system("test")


@pytest.fixture
def region(db):
    """The portal's two establishments that the extract names: the CHRU by its site's FINESS,
    the clinic of Blois by its legal entity's (its site has another number)."""
    return {
        "chru": establishment(name="CHRU de Tours", finess=CHRU["finess_site"]),
        "clinic": establishment(name="Clinique de Blois", finess=CLINIC["finess_legal"]),
    }


def imported(tmp_path, lines, name="PS_LibreAcces_Personne_activite_202601010000.txt"):
    call_command("directory_import", str(write(tmp_path, lines, name=name)))
    return DirectoryImport.objects.order_by("-pk").first()


def january():
    return [
        line("899700000011", "MARTIN", **CHRU),
        line("899700000011", "MARTIN", department="41", commune="Blois", **CLINIC),
        line("899700000029", "DURAND", first_name="JEAN-PIERRE", specialty="Radio-diagnostic"),
        line("899700000037", "MARTINEZ", first_name="LUC", specialty="Urologie", **CHRU),
        line("0379912345", "LEROY", id_type="0", specialty="", profession=("60", "Infirmier")),
    ]


def linked_events(professional):
    return AuditEvent.objects.filter(
        object_type="portal.professional", object_id=str(professional.pk)
    )


def test_linking_creates_a_professional_whose_account_only_pro_sante_connect_opens(
    tmp_path, region
):
    imported(tmp_path, january())
    martin = DirectoryPerson.objects.get(last_name="MARTIN")

    linked = link_professional(martin, by=ADMIN)

    professional = linked.professional
    assert linked.created
    assert professional.rpps == "99700000011"
    assert (professional.title, professional.profession, professional.specialty) == (
        "Dr",
        Profession.PHYSICIAN,
        Specialty.MEDICAL_ONCOLOGY,
    )
    account = professional.user
    assert (account.first_name, account.last_name) == ("Claire", "MARTIN")
    assert has_placeholder_email(account.email)
    assert not account.has_usable_password()
    # Both practice sites, one by its site's FINESS, the other by its legal entity's.
    affiliations = Affiliation.objects.filter(professional=professional)
    assert {a.establishment.name for a in affiliations} == {"CHRU de Tours", "Clinique de Blois"}
    assert affiliations.filter(is_primary=True).count() == 1
    assert sorted(linked.affiliations_added) == sorted(
        [CHRU["finess_site"], CLINIC["finess_legal"]]
    )
    event = linked_events(professional).get()
    assert event.detail["national_id"] == "899700000011"
    assert event.detail["created"] is True
    assert event.actor_name == "test"


def test_linking_again_changes_nothing(tmp_path, region):
    imported(tmp_path, january())
    martin = DirectoryPerson.objects.get(last_name="MARTIN")
    first = link_professional(martin, by=ADMIN).professional
    before = (User.objects.count(), Affiliation.objects.count(), AuditEvent.objects.count())

    again = link_professional(martin, by=ADMIN)

    assert again.professional == first
    assert not again.created and not again.specialty_changed and again.affiliations_added == []
    assert (User.objects.count(), Affiliation.objects.count(), AuditEvent.objects.count()) == before


def test_the_sign_in_links_its_own_account(tmp_path, region):
    imported(tmp_path, january())
    account = user(email="claire.martin@chu-tours.test", first_name="Claire", last_name="Martin")

    linked = link_professional(active_person("899700000011"), by=ADMIN, user=account)

    assert linked.professional.user == account
    assert User.objects.filter(email__endswith="annuaire.invalid").count() == 0


def test_an_account_that_is_already_another_professional_is_refused(tmp_path, region):
    imported(tmp_path, january())
    someone = link_professional(active_person("899700000029"), by=ADMIN).professional

    with pytest.raises(ValueError, match="already"):
        link_professional(active_person("899700000011"), by=ADMIN, user=someone.user)

    assert not Professional.objects.filter(rpps="99700000011").exists()


def test_the_portal_keeps_what_it_added_when_the_directory_no_longer_lists_a_site(tmp_path, region):
    imported(tmp_path, january())
    professional = link_professional(active_person("99700000011"), by=ADMIN).professional
    newer = [line("899700000011", "MARTIN", department="41", commune="Blois", **CLINIC)]
    imported(tmp_path, newer, name="PS_LibreAcces_Personne_activite_202602010000.txt")

    assert professional.affiliations.count() == 2


def test_a_newer_extract_brings_a_linked_professional_up_to_date(tmp_path, region):
    imported(tmp_path, january())
    durand = link_professional(active_person("899700000029"), by=ADMIN).professional
    # DURAND, unlinked, practised in town; now also at the CHRU and in nuclear medicine.
    newer = [
        *january()[:2],
        line("899700000029", "DURAND", first_name="JEAN-PIERRE", specialty="Médecine nucléaire"),
        line(
            "899700000029",
            "DURAND",
            first_name="JEAN-PIERRE",
            specialty="Médecine nucléaire",
            **CHRU,
        ),
        *january()[3:],
    ]

    run = imported(tmp_path, newer, name="PS_LibreAcces_Personne_activite_202602010000.txt")

    durand.refresh_from_db()
    assert durand.specialty == Specialty.NUCLEAR_MEDICINE
    assert [a.establishment.name for a in durand.affiliations.all()] == ["CHRU de Tours"]
    assert durand.affiliations.get().is_primary
    assert run.counts["professionals_refreshed"] == 1
    update = linked_events(durand).latest("occurred_at")
    assert update.detail["specialty"] == Specialty.NUCLEAR_MEDICINE
    assert update.detail["affiliations_added"] == [CHRU["finess_site"]]
    # Only the linked professionals: MARTIN, MARTINEZ have no account and get none.
    assert Professional.objects.count() == 1


def test_a_rerun_of_the_same_extract_refreshes_nobody(tmp_path, region):
    imported(tmp_path, january())
    link_professional(active_person("899700000029"), by=ADMIN)
    events = AuditEvent.objects.count()

    run = imported(tmp_path, january())

    assert run.counts["professionals_refreshed"] == 0
    assert AuditEvent.objects.count() == events


def test_refresh_of_every_linked_professional_skips_the_inactive(tmp_path, region):
    imported(tmp_path, january())
    durand = link_professional(active_person("899700000029"), by=ADMIN).professional
    DirectoryPerson.objects.filter(rpps="99700000029").update(
        is_active=False, specialty=Specialty.PATHOLOGY
    )

    assert refresh_linked_professionals(by=ADMIN, persons=DirectoryPerson.objects.all()) == 0

    durand.refresh_from_db()
    assert durand.specialty == Specialty.RADIOLOGY


@pytest.mark.parametrize(
    "national_id",
    ["0379912345", "899700000086", "", "  "],
    ids=["ADELI nurse", "unknown", "empty", "blank"],
)
def test_only_an_active_rpps_person_of_the_directory_can_be_linked(tmp_path, national_id):
    imported(tmp_path, january())
    with pytest.raises(NotInDirectory):
        active_person(national_id)


def test_an_inactive_or_adeli_person_is_not_linked(tmp_path, region):
    imported(tmp_path, january())
    leroy = DirectoryPerson.objects.get(last_name="LEROY")
    martin = DirectoryPerson.objects.get(last_name="MARTIN")
    imported(
        tmp_path, january()[2:], name="PS_LibreAcces_Personne_activite_202602010000.txt"
    )  # MARTIN left the region
    martin.refresh_from_db()

    for person in (leroy, martin):
        with pytest.raises(NotInDirectory):
            link_professional(person, by=ADMIN)
    with pytest.raises(NotInDirectory):
        active_person("899700000011")
    assert not Professional.objects.exists()
    assert not AuditEvent.objects.exists()


def test_search_by_the_start_of_a_name_or_an_rpps(tmp_path):
    imported(tmp_path, january())

    def names(query):
        return [person.last_name for person in search(query)]

    assert names("mart") == ["MARTIN", "MARTINEZ"]
    assert names("MARTIN luc") == ["MARTINEZ"]
    assert names("jean-p") == ["DURAND"]
    assert names("99700000029") == ["DURAND"]
    assert names("8997000000") == ["DURAND", "MARTIN", "MARTINEZ"]
    assert names("m") == []  # too short to mean anyone
    assert names("tin") == []  # the start of a name, not any part
    DirectoryPerson.objects.filter(last_name="MARTINEZ").update(is_active=False)
    assert names("mart") == ["MARTIN"]


def test_a_placeholder_address_is_never_written_to(
    tmp_path, region, settings, django_capture_on_commit_callbacks
):
    settings.TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {
                "loaders": [
                    (
                        "django.template.loaders.locmem.Loader",
                        {"news/email/n_subject.txt": "News\n", "news/email/n.txt": "News.\n"},
                    )
                ]
            },
        }
    ]
    imported(tmp_path, january())
    from_directory = link_professional(active_person("899700000011"), by=ADMIN).professional.user
    reader = user(email="lecteur@mirc.test")

    with django_capture_on_commit_callbacks(execute=True):
        told = notify([from_directory, reader], "News.", "/", email_template="news/email/n")

    # Told in the portal, both; by e-mail, only the one with a real address.
    assert told == [from_directory, reader]
    assert [message.to for message in mail.outbox] == [["lecteur@mirc.test"]]
    # Nor when the message leaves: a task enqueued with the recipients' ids checks again.
    assert send_each(subject="S", body="B", recipient_ids=[from_directory.pk], what="t") == 0
    assert len(mail.outbox) == 1
