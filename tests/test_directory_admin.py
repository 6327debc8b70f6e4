"""The directory's administration pages: the administrator sees at once when the directory was
last imported and what that run did, and which runs failed."""

import html

import pytest
from django.urls import reverse

from portal.directory_models import DirectoryImport
from tests.builders import user
from tests.conftest import client_for
from tests.test_directory_import import first_extract, run, write

pytestmark = pytest.mark.django_db


@pytest.fixture
def administrator():
    return client_for(user(email="admin@mirc.test", superuser=True))


def test_the_persons_list_opens_on_the_last_import_and_its_summary(
    tmp_path, administrator, django_assert_max_num_queries
):
    run(write(tmp_path, first_extract()))

    with django_assert_max_num_queries(12):
        page = administrator.get(reverse("admin:portal_directoryperson_changelist"))

    text = html.unescape(page.content.decode())
    assert "Dernier import de l'annuaire national" in text
    assert "PS_LibreAcces_Personne_activite_202601010000.txt, importé le" in text
    assert "Lignes lues : 11, hors de la région : 2, ignorées : 3" in text
    assert "Professionnels créés : 5, mis à jour : 0, inchangés : 0, devenus inactifs : 0" in text
    assert "MARTIN" in text  # the list itself follows


def test_a_failed_last_import_is_said_above_the_last_good_one(tmp_path, administrator):
    run(write(tmp_path, first_extract()))
    broken = tmp_path / "PS_LibreAcces_Personne_activite_202602010000.txt"
    broken.write_text("not|the|header|\n")
    with pytest.raises(Exception, match="header"):
        run(broken)

    text = html.unescape(
        administrator.get(reverse("admin:portal_directoryperson_changelist")).content.decode()
    )

    assert "L'import de PS_LibreAcces_Personne_activite_202602010000.txt" in text
    assert "a échoué" in text
    assert "PS_LibreAcces_Personne_activite_202601010000.txt, importé le" in text


def test_before_any_import_the_page_says_how_to_import(administrator):
    text = html.unescape(
        administrator.get(reverse("admin:portal_directoryperson_changelist")).content.decode()
    )
    assert "L'annuaire n'a jamais été importé" in text


def test_the_imports_list_shows_counts_and_failures(tmp_path, administrator):
    run(write(tmp_path, first_extract()))
    DirectoryImport.objects.create(file_name="broken.txt", failure="DirectoryFileError: header")

    text = administrator.get(reverse("admin:portal_directoryimport_changelist")).content.decode()

    assert "Lignes lues" in text and ">11<" in text
    assert "Échec : DirectoryFileError: header" in text
    assert "Terminé" in text
