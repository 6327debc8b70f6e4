"""The national directory's import from a fictitious extract in the exact public format."""

import io

import pytest
from django.core.management import CommandError, call_command

from portal.directory import COLUMNS, HEADER
from portal.directory_models import DirectoryActivity, DirectoryImport, DirectoryPerson
from portal.models import Specialty

pytestmark = pytest.mark.django_db

CHRU = {"finess_site": "370000481", "finess_legal": "370000481", "name": "CHRU DE TOURS"}
CLINIC = {"finess_site": "410000020", "finess_legal": "410000012", "name": "CLINIQUE DE BLOIS"}


def line(
    national_id,
    last_name,
    *,
    id_type="8",
    first_name="CLAIRE",
    specialty="Oncologie option médicale",
    profession=("10", "Médecin"),
    finess_site="",
    finess_legal="",
    name="CABINET",
    department="37",
    commune="Tours",
):
    values = dict.fromkeys(COLUMNS, "")
    values.update(
        {
            "Type d'identifiant PP": id_type,
            "Identifiant PP": national_id[1:],
            "Identification nationale PP": national_id,
            "Code civilité d'exercice": "DR",
            "Libellé civilité d'exercice": "Docteur",
            "Nom d'exercice": last_name,
            "Prénom d'exercice": first_name,
            "Code profession": profession[0],
            "Libellé profession": profession[1],
            "Code type savoir-faire": "S" if specialty else "",
            "Libellé savoir-faire": specialty,
            "Code mode exercice": "S",
            "Libellé mode exercice": "Salarié",
            "Numéro FINESS site": finess_site,
            "Numéro FINESS établissement juridique": finess_legal,
            "Raison sociale site": name,
            "Libellé commune (coord. structure)": commune,
            "Code Département (structure)": department,
            "Code secteur d'activité": "SA01",
            "Libellé secteur d'activité": "Etablissement public de santé",
        }
    )
    return "|".join(values[column] for column in COLUMNS) + "|"


def first_extract():
    return [
        line("899700000011", "MARTIN", **CHRU),
        line("899700000029", "DURAND", specialty="Radio-diagnostic", **CHRU),
        # Not consecutive with MARTIN's first line: the import must not assume it.
        line("899700000037", "PETIT", specialty="Chirurgie maxillo-faciale", department="41"),
        line("899700000011", "MARTIN", department="41", commune="Blois", **CLINIC),
        line(
            "0379912345",
            "LEROY",
            id_type="0",
            specialty="",
            profession=("60", "Infirmier"),
        ),
        line("899700000045", "BERNARD", department="75", commune="Paris"),
        line("899700000052", "ROUX", department="75", commune="Paris"),
        line("899700000052", "ROUX", department="18", commune="Bourges"),
        "8|malformed|line|",
        line("", "NOBODY"),
        line("899700000060", "WEIRD", id_type="3"),
    ]


def write(tmp_path, lines, name="PS_LibreAcces_Personne_activite_202601010000.txt"):
    path = tmp_path / name
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(path):
    call_command("directory_import", str(path))
    return DirectoryImport.objects.order_by("-pk").first()


def test_first_import_keeps_the_region_and_reports_bad_lines(tmp_path):
    record = run(write(tmp_path, first_extract()))

    assert record.finished_at is not None
    assert record.counts["lines_read"] == 11
    assert record.counts["created"] == 5
    assert record.counts["lines_out_of_region"] == 2
    assert record.counts["lines_skipped"] == 3
    assert record.errors_sample == [
        "line 10: 3 fields instead of 52",
        "line 11: empty national identifier",
        "line 12: unknown identifier type '3'",
    ]
    assert not DirectoryPerson.objects.filter(last_name__in=["BERNARD", "NOBODY", "WEIRD"]).exists()

    martin = DirectoryPerson.objects.get(national_id="899700000011")
    assert martin.rpps == "99700000011"
    assert martin.specialty == Specialty.MEDICAL_ONCOLOGY
    assert sorted(martin.activities.values_list("finess_site", "finess_legal", "department")) == [
        ("370000481", "370000481", "37"),
        ("410000020", "410000012", "41"),
    ]
    assert DirectoryPerson.objects.get(last_name="DURAND").specialty == Specialty.RADIOLOGY
    petit = DirectoryPerson.objects.get(last_name="PETIT")
    assert (petit.specialty, petit.specialty_label) == ("", "Chirurgie maxillo-faciale")
    assert petit.activities.get().finess_site == ""

    leroy = DirectoryPerson.objects.get(national_id="0379912345")
    assert (leroy.id_type, leroy.rpps, leroy.profession_code) == ("0", "", "60")

    # Only the in-region activity of a person practising in and out of the region.
    roux = DirectoryPerson.objects.get(last_name="ROUX")
    assert list(roux.activities.values_list("department", flat=True)) == ["18"]


def test_a_second_run_of_the_same_file_changes_nothing(tmp_path):
    path = write(tmp_path, first_extract())
    run(path)
    activities = set(DirectoryActivity.objects.values_list("pk", flat=True))

    record = run(path)

    assert record.counts["unchanged"] == 5
    assert record.counts["created"] == record.counts["updated"] == 0
    assert record.counts["marked_inactive"] == record.counts["activities_created"] == 0
    assert record.counts["activities_removed"] == 0
    assert set(DirectoryActivity.objects.values_list("pk", flat=True)) == activities
    assert DirectoryPerson.objects.filter(is_active=True).count() == 5


def test_a_newer_extract_updates_replaces_activities_and_marks_the_absent_inactive(tmp_path):
    run(write(tmp_path, first_extract()))
    newer = [
        line("899700000011", "MARTIN", department="41", commune="Blois", **CLINIC),
        line("899700000029", "DURAND", specialty="Médecine nucléaire", **CHRU),
        line("899700000037", "PETIT", specialty="Chirurgie maxillo-faciale", department="41"),
        line("0379912345", "LEROY", id_type="0", specialty="", profession=("60", "Infirmier")),
        # ROUX now practises only outside the region: absent from the region's directory.
        line("899700000052", "ROUX", department="75", commune="Paris"),
    ]

    record = run(write(tmp_path, newer, name="PS_LibreAcces_Personne_activite_202602010000.txt"))

    assert record.counts["updated"] == 1  # DURAND's specialty
    assert record.counts["unchanged"] == 3
    assert record.counts["marked_inactive"] == 1
    assert record.counts["activities_removed"] == 1  # MARTIN's CHRU activity
    durand = DirectoryPerson.objects.get(last_name="DURAND")
    assert (durand.specialty, durand.specialty_label) == (
        Specialty.NUCLEAR_MEDICINE,
        "Médecine nucléaire",
    )
    martin = DirectoryPerson.objects.get(last_name="MARTIN")
    assert list(martin.activities.values_list("finess_site", flat=True)) == ["410000020"]
    roux = DirectoryPerson.objects.get(last_name="ROUX")
    assert not roux.is_active  # kept, never deleted
    assert DirectoryPerson.objects.count() == 5


def test_the_region_comes_from_the_setting(tmp_path, settings):
    settings.DIRECTORY_DEPARTMENTS = ["75"]
    run(write(tmp_path, first_extract()))
    assert set(DirectoryPerson.objects.values_list("last_name", flat=True)) == {"BERNARD", "ROUX"}


def test_a_file_with_another_header_is_refused(tmp_path):
    path = tmp_path / "other.txt"
    path.write_text("a|b|c|\n", encoding="utf-8")
    with pytest.raises(CommandError, match="header"):
        call_command("directory_import", str(path))
    assert DirectoryImport.objects.get().failure
    assert not DirectoryPerson.objects.exists()


def test_batches_smaller_than_a_person_give_the_same_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("portal.directory.BATCH_SIZE", 2)
    lines = [
        *first_extract(),
        # A person whose two lines differ (two professions): the first wins, every run.
        line("899700000078", "MOREAU", **CHRU),
        line("899700000078", "MOREAU", profession=("21", "Pharmacien"), specialty=""),
    ]
    path = write(tmp_path, lines)

    record = run(path)

    assert record.counts["created"] == 6
    martin = DirectoryPerson.objects.get(last_name="MARTIN")
    assert martin.activities.count() == 2
    moreau = DirectoryPerson.objects.get(last_name="MOREAU")
    assert (moreau.profession_code, moreau.specialty) == ("10", Specialty.MEDICAL_ONCOLOGY)
    assert moreau.activities.count() == 2

    again = run(path)
    assert again.counts["unchanged"] == 6
    assert again.counts["updated"] == again.counts["activities_created"] == 0
    assert again.counts["activities_removed"] == 0


def test_the_command_prints_its_summary_and_the_skipped_lines(tmp_path):
    out = io.StringIO()
    call_command("directory_import", str(write(tmp_path, first_extract())), stdout=out)
    summary = out.getvalue()
    assert "lines read: 11, out of region: 2, skipped: 3" in summary
    assert "professionals created: 5, updated: 0, unchanged: 0, marked inactive: 0" in summary
    assert "skipped line 10: 3 fields instead of 52" in summary


def test_an_overlong_identifier_is_a_bad_line_and_a_long_name_is_cut(tmp_path):
    record = run(
        write(
            tmp_path,
            [
                line("899700000011", "MARTIN", finess_site="3700004810000"),
                line("899700000029", "DURAND", name="CLINIQUE " + "X" * 300),
            ],
        )
    )
    assert record.errors_sample == ["line 2: finess_site longer than 9 characters"]
    assert len(DirectoryActivity.objects.get().name) == 200


def test_a_national_configuration_is_recorded_with_all_its_departments(tmp_path, settings):
    # Over 300 characters: a column of 255 refused the run's record on PostgreSQL.
    settings.DIRECTORY_DEPARTMENTS = [f"{n:02d}" for n in range(1, 96)] + ["971", "972", "974"]
    record = run(write(tmp_path, first_extract()))
    assert record.failure == ""
    assert len(record.departments.split(",")) == 98
    assert record.counts["created"] == 6
