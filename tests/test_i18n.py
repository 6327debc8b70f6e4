"""The French catalogue: complete, placeholder-safe, covering the source, and actually served.

French is the language of the portal (LANGUAGE_CODE = "fr"); English is the source language
of the code and templates. The page tests compile locale/*/django.po with Babel into a
temporary directory and point LOCALE_PATHS at it, so they test the committed .po files and
never a stale .mo left by an earlier `make setup`.
"""

import hashlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.urls import reverse
from django.utils import translation

from portal.models import Patient
from tests.conftest import client_for

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locale"
FR_PO = LOCALE / "fr" / "LC_MESSAGES" / "django.po"

# printf-style conversions as Python's % operator reads them; "%%" is a literal percent sign.
# Django's {% blocktranslate %} variables appear in the .po as %(name)s too.
PLACEHOLDER_RE = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[#0 +-]*(?:\*|\d+)?(?:\.\d+)?(?P<conv>[a-zA-Z%])"
)


def read_catalogue(path: Path):
    with path.open("rb") as handle:
        return read_po(handle, abort_invalid=True)


def placeholders(text: str) -> tuple[Counter, list[str]]:
    """Named placeholders (as a multiset) and positional ones (in order), "%%" left out."""
    named: Counter = Counter()
    positional: list[str] = []
    for match in PLACEHOLDER_RE.finditer(text):
        if match["conv"] == "%":
            continue
        if match["name"] is not None:
            named[f"%({match['name']}){match['conv']}"] += 1
        else:
            positional.append(f"%{match['conv']}")
    return named, positional


def entries(catalogue):
    """The real messages, without the header."""
    return [message for message in catalogue if message.id]


@pytest.fixture(scope="module")
def french():
    return read_catalogue(FR_PO)


# --- The catalogue itself ------------------------------------------------------------------


def test_french_header(french):
    assert str(french.locale) == "fr"
    assert french.plural_forms == "nplurals=2; plural=(n > 1);"
    assert not french.fuzzy, "the header of the French catalogue is marked fuzzy"
    assert len(entries(french)) > 200


def test_every_french_entry_is_translated_and_not_fuzzy(french):
    problems = []
    for message in entries(french):
        strings = message.string if message.pluralizable else (message.string,)
        if message.fuzzy:
            problems.append(f"fuzzy: {message.id!r}")
        if message.pluralizable and len(strings) != french.num_plurals:
            problems.append(f"{len(strings)} plural forms instead of 2: {message.id!r}")
        if not all(s and s.strip() for s in strings):
            problems.append(f"untranslated: {message.id!r}")
    assert not problems, "\n".join(problems)


def test_every_french_entry_keeps_the_placeholders_of_its_source(french):
    problems = []
    for message in entries(french):
        if message.pluralizable:
            singular, plural = message.id
            # French uses form 0 for 0 and 1, form 1 above: each keeps all the variables.
            pairs = list(zip((singular, plural), message.string, strict=True))
        else:
            pairs = [(message.id, message.string)]
        for source, translated in pairs:
            if placeholders(source) != placeholders(translated):
                problems.append(f"{source!r} -> {translated!r}")
            if "{{" in translated or "{%" in translated:
                problems.append(f"template syntax left in the translation: {translated!r}")
    assert not problems, "placeholders differ:\n" + "\n".join(problems)


def test_placeholder_parser():
    assert placeholders("Page %(number)s of %(total)s") == (
        Counter({"%(number)s": 1, "%(total)s": 1}),
        [],
    )
    assert placeholders("%s of %d, 100%% sure") == (Counter(), ["%s", "%d"])
    assert placeholders("%(name)s") != placeholders("%(nom)s")


def test_gnu_msgfmt_accepts_the_french_catalogue():
    if shutil.which("msgfmt") is None:
        pytest.skip("GNU gettext's msgfmt is not installed")
    result = subprocess.run(
        ["msgfmt", "--check", "-o", "/dev/null", str(FR_PO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- The catalogue covers the source -------------------------------------------------------

GETTEXT_TOOLS = ("xgettext", "msguniq", "msgmerge", "msgattrib")
NOT_SOURCE = (
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "staticfiles",
    "var",
    "locale",
    "tests",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "test-artifacts",
    "*.egg-info",
    "*.mo",
)


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_french_catalogue_covers_every_string_of_the_source(tmp_path, french):
    """Extract the strings afresh, from a copy of the source, and find each one translated.

    makemessages writes into the project's locale directory: it runs in a copy of the tree
    (its settings put LOCALE_PATHS beside the copied manage.py), so locale/ is never touched.
    """
    missing_tools = [tool for tool in GETTEXT_TOOLS if shutil.which(tool) is None]
    if missing_tools:
        pytest.skip(
            f"GNU gettext is not installed ({', '.join(missing_tools)} missing): "
            "makemessages cannot extract the source strings"
        )
    before = _digest(LOCALE)
    copy = tmp_path / "src"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*NOT_SOURCE), symlinks=True)
    (copy / "locale").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "makemessages",
            "-l",
            "fr",
            "--no-obsolete",
            "--ignore=.venv",
            "--ignore=staticfiles",
            "--ignore=tests",
            "--ignore=node_modules",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _digest(LOCALE) == before, "makemessages changed the real locale/ directory"

    extracted = read_catalogue(copy / "locale" / "fr" / "LC_MESSAGES" / "django.po")
    assert len(entries(extracted)) > 200, "the extraction found suspiciously few strings"
    committed = {(m.id, m.context): m for m in entries(french)}
    missing = [
        message.id
        for message in entries(extracted)
        if (message.id, message.context) not in committed
        or committed[(message.id, message.context)].fuzzy
    ]
    assert not missing, (
        "strings of the source missing from locale/fr/LC_MESSAGES/django.po "
        "(run makemessages -l fr -l en and translate them):\n" + "\n".join(repr(m) for m in missing)
    )


# --- The translations are served -----------------------------------------------------------


@pytest.fixture(scope="session")
def compiled_locale(tmp_path_factory) -> Path:
    """Every catalogue of locale/ compiled to .mo, as `make setup` (pybabel compile) does."""
    target = tmp_path_factory.mktemp("locale")
    for po_path in sorted(LOCALE.glob("*/LC_MESSAGES/django.po")):
        catalogue = read_catalogue(po_path)
        if catalogue.fuzzy:
            # pybabel compile skips a catalogue whose header is fuzzy: so does the portal.
            assert po_path != FR_PO, "the French catalogue is marked fuzzy"
            continue
        mo_path = target / po_path.relative_to(LOCALE).with_suffix(".mo")
        mo_path.parent.mkdir(parents=True, exist_ok=True)
        with mo_path.open("wb") as handle:
            write_mo(handle, catalogue)
    assert (target / "fr" / "LC_MESSAGES" / "django.mo").is_file()
    return target


@pytest.fixture
def catalogues(settings, compiled_locale):
    """Serve the freshly compiled catalogues.

    Changing LOCALE_PATHS through pytest-django's ``settings`` sends ``setting_changed``,
    on which Django's test signals empty the translation caches of trans_real
    (_translations, _default, _active, check_for_language); the same happens again when
    the setting is restored, so no other test sees these catalogues.
    """
    settings.LOCALE_PATHS = [compiled_locale]
    yield compiled_locale


def test_the_compiled_catalogue_is_the_one_served(catalogues):
    with translation.override("fr"):
        assert translation.gettext("Care team") == "Équipe de soins"
        assert (
            translation.ngettext("%(counter)s patient", "%(counter)s patients", 0) % {"counter": 0}
            == "0 patient"
        )
        assert (
            translation.ngettext("%(counter)s patient", "%(counter)s patients", 2) % {"counter": 2}
            == "2 patients"
        )
    with translation.override("en"):
        assert translation.gettext("Care team") == "Care team"


def test_born_agrees_with_the_sex_in_the_display_name(catalogues):
    woman = Patient(birth_name="Besnard", used_name="Lefort", first_names="Anne Marie", sex="F")
    man = Patient(birth_name="Besnard", used_name="Lefort", first_names="Paul", sex="M")
    with translation.override("fr"):
        assert woman.display_name == "LEFORT (née BESNARD) Anne"
        assert man.display_name == "LEFORT (né BESNARD) Paul"
    with translation.override("en"):
        assert woman.display_name == "LEFORT (born BESNARD) Anne"


FRENCH_HOME = [
    "Accueil",
    "Mes patients",
    "Télé-expertise",
    "Imagerie",
    "un expert à distance, avec recueil du consentement",
    "Bienvenue, Claire Martin",
    "Oncologie médicale",
    "Se déconnecter",
    "Portail régional de coopération médicale",
]
ENGLISH_HOME = [
    "Home",
    "My patients",
    "Tele-expertise",
    "Imaging",
    "Ask a remote expert for an opinion",
    "Welcome, Claire Martin",
    "Medical oncology",
    "Sign out",
    "Regional portal for medical collaboration",
]

FRENCH_PATIENT = [
    "Équipe de soins",
    "Médecin référent",
    "Médecin traitant",
    "Qualifiée",
    "Traits stricts d'identité",
    "Nom de naissance",
    "née le",
    "lieu de naissance",
    "Identifiants locaux (IPP)",
    "Ajouter un collègue à l'équipe de soins",
]
ENGLISH_PATIENT = [
    "Care team",
    "Referring doctor",
    "General practitioner",
    "Qualified",
    "Strict identity traits",
    "Birth name",
    "born on",
    "birth place",
    "Local identifiers (IPP)",
    "Add a colleague to the care team",
]


def _page(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return response.content.decode()


def _switch_to_english(client) -> None:
    response = client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert response.status_code == 302
    assert response["Location"] == "/"


@pytest.mark.parametrize(
    ("page", "french_words", "english_words"),
    [
        ("home", FRENCH_HOME, ENGLISH_HOME),
        ("patient", FRENCH_PATIENT, ENGLISH_PATIENT),
    ],
)
def test_pages_are_french_by_default_and_english_on_request(
    world, catalogues, page, french_words, english_words
):
    url = reverse("home") if page == "home" else reverse("patient-detail", args=[world.patient.pk])
    client = client_for(world.oncologist.user)

    html = _page(client, url)
    assert '<html lang="fr">' in html
    assert [word for word in french_words if word not in html] == []
    assert [word for word in english_words if word in html] == []

    _switch_to_english(client)

    html = _page(client, url)
    assert '<html lang="en">' in html
    assert [word for word in english_words if word not in html] == []
    assert [word for word in french_words if word in html] == []


def test_browser_asking_for_english_gets_english(world, catalogues):
    client = client_for(world.oncologist.user)
    html = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.8").content.decode()
    assert "My patients" in html
    assert "Mes patients" not in html
