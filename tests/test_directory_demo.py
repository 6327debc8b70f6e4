"""The demo's national directory (demo/directory.py): a fresh demo has one, in the exact format,
and its doctors are the demo's own accounts."""

import pytest
from django.core.management import call_command

from demo import directory
from demo.seed import PROFESSIONALS
from portal.audit import Actor
from portal.directory import SPECIALTY_BY_LABEL, DirectoryFileError, import_lines
from portal.directory_accounts import NotInDirectory, active_person, link_professional, search
from portal.directory_models import DirectoryImport, DirectoryPerson
from portal.models import AuditEvent, Professional, Specialty

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(db):
    call_command("seed_demo", "--force", "--portal-only", verbosity=0)


def test_the_demo_has_a_directory_of_the_region(demo):
    run = DirectoryImport.objects.get()
    assert run.file_name == directory.EXTRACT_NAME
    assert run.failure == "" and run.counts["lines_skipped"] == 0
    assert run.counts["lines_out_of_region"] == 3
    persons = DirectoryPerson.objects.filter(is_active=True)
    assert 60 <= persons.count() <= 75
    assert persons.filter(id_type="0", profession_code="60").count() == 1  # the ADELI nurse
    # Doctors without an account: GPs in town, radiologists, some on several sites.
    others = persons.exclude(
        rpps__in=Professional.objects.filter(rpps__isnull=False).values("rpps")
    )
    assert others.filter(specialty=Specialty.GENERAL_PRACTICE).count() >= 10
    assert others.filter(specialty=Specialty.RADIOLOGY).count() >= 5
    assert others.filter(activities__sector_code__in=["SA07", "SA08"]).distinct().count() >= 12
    several = [p for p in others.prefetch_related("activities") if len(p.activities.all()) > 1]
    assert len(several) >= 5
    # A doctor of Paris who also practises in Blois: only the Blois line is kept.
    assert {a.department for a in persons.get(rpps__startswith="9972000901").activities.all()} == {
        "41"
    }


def test_every_demo_doctor_is_listed_and_links_to_their_own_account(demo):
    events = AuditEvent.objects.count()
    doctors = Professional.objects.filter(profession="medecin").select_related("user")
    assert doctors.count() == sum(1 for row in PROFESSIONALS if row[4] == "medecin")

    for doctor in doctors:
        person = active_person(doctor.rpps)
        assert (person.last_name, person.first_name) == (
            doctor.user.last_name.upper(),
            doctor.user.first_name.upper(),
        )
        linked = link_professional(person, by=Actor.system("test"))
        assert linked.professional == doctor, doctor
        assert not linked.created and not linked.affiliations_added and not linked.specialty_changed
    # A fetal medicine specialist, listed in gynaecology-obstetrics, stays one.
    fontaine = Professional.objects.get(user__email="l.fontaine@mirc.test")
    assert fontaine.specialty == Specialty.FETAL_MEDICINE
    assert AuditEvent.objects.count() == events
    # The doctors of the expertise demo are listed too, before their accounts exist.
    assert search("Vidal")[0].specialty == Specialty.RADIOLOGY


def test_each_listed_specialty_maps_back_to_the_portal_s():
    for specialty, label in directory.LABEL_BY_SPECIALTY.items():
        expected = directory.LABEL_BY_SPECIALTY.get(specialty)
        assert SPECIALTY_BY_LABEL[label.lower()] in (specialty, Specialty.GYNECOLOGY_OBSTETRICS)
        assert expected == label


def test_the_extract_is_in_the_exact_format(tmp_path):
    path = directory.write_extract(tmp_path)
    with path.open(encoding="utf-8") as lines:
        run = DirectoryImport.objects.create(file_name=path.name)
        try:
            summary = import_lines(run, lines, {"18", "28", "36", "37", "41", "45"})
        except DirectoryFileError:  # pragma: no cover - the assertion says it
            pytest.fail("the demo extract's header is not the directory's")
    assert summary.lines_skipped == 0
    with pytest.raises(NotInDirectory):
        active_person("0379912345")
