"""Import of the national directory's public extract (format: ../shared/reference/directory.md).

The file is streamed line by line and written in batches, so memory stays bounded whatever its
size. A person's lines need not be consecutive: each line upserts its person and its activity
(found again by a digest of its fields), both stamped with the run; at the end, SQL reconciles
what the run did not stamp (activities of seen persons that are gone, persons absent from the
extract made inactive). That needs no sort and no second pass over the file, and the whole run
is one transaction, so a person is never seen half-imported and a failed run changes nothing.
"""

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.audit import Actor
from portal.directory_accounts import refresh_linked_professionals
from portal.directory_models import DirectoryActivity, DirectoryImport, DirectoryPerson
from portal.models import Professional, Specialty

logger = logging.getLogger(__name__)

COLUMNS = [
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Code civilité d'exercice",
    "Libellé civilité d'exercice",
    "Code civilité",
    "Libellé civilité",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Code profession",
    "Libellé profession",
    "Code catégorie professionnelle",
    "Libellé catégorie professionnelle",
    "Code type savoir-faire",
    "Libellé type savoir-faire",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Code mode exercice",
    "Libellé mode exercice",
    "Numéro SIRET site",
    "Numéro SIREN site",
    "Numéro FINESS site",
    "Numéro FINESS établissement juridique",
    "Identifiant technique de la structure",
    "Raison sociale site",
    "Enseigne commerciale site",
    "Complément destinataire (coord. structure)",
    "Complément point géographique (coord. structure)",
    "Numéro Voie (coord. structure)",
    "Indice répétition voie (coord. structure)",
    "Code type de voie (coord. structure)",
    "Libellé type de voie (coord. structure)",
    "Libellé Voie (coord. structure)",
    "Mention distribution (coord. structure)",
    "Bureau cedex (coord. structure)",
    "Code postal (coord. structure)",
    "Code commune (coord. structure)",
    "Libellé commune (coord. structure)",
    "Code pays (coord. structure)",
    "Libellé pays (coord. structure)",
    "Téléphone (coord. structure)",
    "Téléphone 2 (coord. structure)",
    "Télécopie (coord. structure)",
    "Adresse e-mail (coord. structure)",
    "Code Département (structure)",
    "Libellé Département (structure)",
    "Ancien identifiant de la structure",
    "Autorité d'enregistrement",
    "Code secteur d'activité",
    "Libellé secteur d'activité",
    "Code section tableau pharmaciens",
    "Libellé section tableau pharmaciens",
]
HEADER = "|".join(COLUMNS) + "|"
_INDEX = {name: position for position, name in enumerate(COLUMNS)}

# The ordinal specialties' labels (as the extract spells them) that are one of the portal's.
SPECIALTY_BY_LABEL = {
    "oncologie option médicale": Specialty.MEDICAL_ONCOLOGY,
    "oncologie option radiothérapie": Specialty.RADIOTHERAPY,
    "radiothérapie": Specialty.RADIOTHERAPY,
    "chirurgie thoracique et cardio-vasculaire": Specialty.THORACIC_SURGERY,
    "chirurgie viscérale et digestive": Specialty.DIGESTIVE_SURGERY,
    "urologie": Specialty.UROLOGY,
    "oto-rhino-laryngologie et chirurgie cervico-faciale": Specialty.ENT_SURGERY,
    "orl et chirurgie cervico-faciale": Specialty.ENT_SURGERY,
    "neurochirurgie": Specialty.NEUROSURGERY,
    "radio-diagnostic": Specialty.RADIOLOGY,
    "radiologie et imagerie médicale": Specialty.RADIOLOGY,
    "médecine nucléaire": Specialty.NUCLEAR_MEDICINE,
    "anatomie et cytologie pathologiques": Specialty.PATHOLOGY,
    "pneumologie": Specialty.PULMONOLOGY,
    "gastro-entérologie et hépatologie": Specialty.GASTROENTEROLOGY,
    "hématologie": Specialty.HEMATOLOGY,
    "dermatologie et vénéréologie": Specialty.DERMATOLOGY,
    "cardiologie et maladies vasculaires": Specialty.CARDIOLOGY,
    "gériatrie": Specialty.GERIATRICS,
    "gynécologie-obstétrique": Specialty.GYNECOLOGY_OBSTETRICS,
    "gynécologie médicale et obstétrique": Specialty.GYNECOLOGY_OBSTETRICS,
    "pédiatrie": Specialty.PEDIATRICS_NEONATOLOGY,
    "génétique médicale": Specialty.GENETICS,
    "psychiatrie": Specialty.PSYCHIATRY,
    "médecine générale": Specialty.GENERAL_PRACTICE,
}

ERRORS_SAMPLE_SIZE = 50
BATCH_SIZE = 1000

PERSON_FIELDS = [
    "id_type",
    "rpps",
    "civility",
    "last_name",
    "first_name",
    "profession_code",
    "profession_label",
    "specialty_label",
    "specialty",
]
ACTIVITY_FIELDS = [
    "finess_site",
    "finess_legal",
    "structure_id",
    "name",
    "practice_mode",
    "sector_code",
    "sector_label",
    "commune",
    "department",
]

# Too long, these make the line bad; other text fields are cut to their column.
IDENTIFIER_FIELDS = {"national_id", "finess_site", "finess_legal", "structure_id", "department"}


def _limits(model, names) -> dict[str, int]:
    return {name: model._meta.get_field(name).max_length for name in names}


# The columns' lengths, read once rather than per line and field.
_PERSON_LIMITS = _limits(DirectoryPerson, ["national_id", *PERSON_FIELDS])
_ACTIVITY_LIMITS = _limits(DirectoryActivity, ACTIVITY_FIELDS)


class DirectoryFileError(Exception):
    """The file is not an extract of the directory (its header does not match)."""


@dataclass
class Summary:
    lines_read: int = 0
    lines_out_of_region: int = 0
    lines_skipped: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    marked_inactive: int = 0
    activities_created: int = 0
    activities_removed: int = 0
    professionals_refreshed: int = 0
    errors: list[str] = field(default_factory=list)
    # The RPPS of the persons this run created or changed (fields or a new practice site):
    # the only ones whose linked professional may need bringing up to date.
    changed_rpps: set[str] = field(default_factory=set)

    def skip(self, line_number: int, reason: str) -> None:
        self.lines_skipped += 1
        if len(self.errors) < ERRORS_SAMPLE_SIZE:
            self.errors.append(f"line {line_number}: {reason}")

    def counts(self) -> dict:
        return {
            key: value for key, value in vars(self).items() if key not in ("errors", "changed_rpps")
        }


def region_departments() -> set[str]:
    return {code.strip() for code in settings.DIRECTORY_DEPARTMENTS if code.strip()}


# What _parse returns for a line of another region: most of a national file, dropped before
# any other work on it.
OUT_OF_REGION = None
_DEPARTMENT = _INDEX["Code Département (structure)"]


def _parse(line: str, departments: set[str] | None = None) -> tuple[dict, dict] | str | None:
    """A line's person and activity, the reason it is skipped, or OUT_OF_REGION when its
    department is not one of ``departments``."""
    values = line.rstrip("\r\n").split("|")
    # The trailing "|" makes one empty value more than there are columns.
    if len(values) != len(COLUMNS) + 1 or values[-1] != "":
        return f"{len(values) - 1} fields instead of {len(COLUMNS)}"
    if departments is not None and values[_DEPARTMENT].strip() not in departments:
        return OUT_OF_REGION

    def value(name: str) -> str:
        return values[_INDEX[name]].strip()

    id_type = value("Type d'identifiant PP")
    if id_type not in ("0", "8"):
        return f"unknown identifier type {id_type!r}"
    national_id = value("Identification nationale PP")
    if not national_id:
        return "empty national identifier"
    specialty_label = (
        value("Libellé savoir-faire") if value("Code type savoir-faire") == "S" else ""
    )
    person = {
        "national_id": national_id,
        "id_type": id_type,
        "rpps": national_id[1:] if id_type == "8" else "",
        "civility": value("Libellé civilité d'exercice"),
        "last_name": value("Nom d'exercice"),
        "first_name": value("Prénom d'exercice"),
        "profession_code": value("Code profession"),
        "profession_label": value("Libellé profession"),
        "specialty_label": specialty_label,
        "specialty": SPECIALTY_BY_LABEL.get(specialty_label.lower(), ""),
    }
    activity = {
        "finess_site": value("Numéro FINESS site"),
        "finess_legal": value("Numéro FINESS établissement juridique"),
        "structure_id": value("Identifiant technique de la structure"),
        "name": value("Raison sociale site"),
        "practice_mode": value("Libellé mode exercice"),
        "sector_code": value("Code secteur d'activité"),
        "sector_label": value("Libellé secteur d'activité"),
        "commune": value("Libellé commune (coord. structure)"),
        "department": value("Code Département (structure)"),
    }
    for record, limits in ((person, _PERSON_LIMITS), (activity, _ACTIVITY_LIMITS)):
        for name, text in record.items():
            limit = limits[name]
            if len(text) <= limit:
                continue
            if name in IDENTIFIER_FIELDS:
                return f"{name} longer than {limit} characters"
            # A long label or name is cut rather than the professional lost.
            record[name] = text[:limit]
    activity["fingerprint"] = hashlib.sha256(
        "|".join(activity[name] for name in ACTIVITY_FIELDS).encode()
    ).hexdigest()
    return person, activity


def _write_batch(run: DirectoryImport, batch: list[tuple[dict, dict]], summary: Summary) -> None:
    national_ids = {person["national_id"] for person, _activity in batch}
    existing = {
        person.national_id: person
        for person in DirectoryPerson.objects.filter(national_id__in=national_ids)
    }
    to_update: dict[str, DirectoryPerson] = {}
    to_stamp: list[int] = []
    for values, _activity in batch:
        person = existing.get(values["national_id"])
        if person is None:
            person = DirectoryPerson(last_import=run, **values)
            existing[person.national_id] = person
            to_update[person.national_id] = person
            summary.created += 1
            continue
        if person.last_import_id == run.id:
            # Seen earlier in this run: its first line wins, so that a person whose lines
            # differ (two professions) neither flips within a run nor counts as updated at
            # every rerun of the same file.
            continue
        changed = [name for name in PERSON_FIELDS if getattr(person, name) != values[name]]
        if changed or not person.is_active:
            summary.updated += 1
        else:
            summary.unchanged += 1
        for name in changed:
            setattr(person, name, values[name])
        if changed:
            to_update[person.national_id] = person
        # In memory too: the person's later lines in this batch see it as seen.
        person.last_import = run
        to_stamp.append(person.pk)
    summary.changed_rpps.update(person.rpps for person in to_update.values() if person.rpps)
    # Split on the primary key, not with "in": a model's == per pair made a batch quadratic.
    new = [person for person in to_update.values() if person.pk is None]
    modified = [person for person in to_update.values() if person.pk is not None]
    DirectoryPerson.objects.bulk_create(new)
    # Only the changed persons through bulk_update (a CASE per field and row, slow); the others,
    # most of them on a rerun, are stamped by one plain UPDATE.
    DirectoryPerson.objects.bulk_update(modified, PERSON_FIELDS)
    DirectoryPerson.objects.filter(pk__in=to_stamp).update(is_active=True, last_import=run)
    # The batch's activities by (person, fingerprint), as plain values: a rerun makes no model
    # instance for the activities already stored, nearly all of them.
    pairs = {
        (existing[person["national_id"]].pk, activity["fingerprint"]): (person, activity)
        for person, activity in batch
    }
    # Filtered on the persons only (a person has a few activities), then matched in Python on
    # the pair: an IN list on both columns of the unique index made SQLite probe every
    # combination (a million per batch), and only this batch's own pairs count as seen.
    stored = {
        (person_id, fingerprint): pk
        for pk, person_id, fingerprint in DirectoryActivity.objects.filter(
            person_id__in={person_id for person_id, _fingerprint in pairs}
        ).values_list("pk", "person_id", "fingerprint")
    }
    fresh = []
    for pair, (person, activity) in pairs.items():
        if pair in stored:
            continue
        fresh.append(DirectoryActivity(person_id=pair[0], last_import_id=run.pk, **activity))
        if person["rpps"]:
            summary.changed_rpps.add(person["rpps"])
    summary.activities_created += len(fresh)
    DirectoryActivity.objects.bulk_create(fresh)
    DirectoryActivity.objects.filter(
        pk__in=[pk for pair, pk in stored.items() if pair in pairs]
    ).update(last_import=run)


def import_lines(
    run: DirectoryImport,
    lines: Iterable[str],
    departments: set[str],
    progress: Callable[[int], None] | None = None,
) -> Summary:
    summary = Summary()
    iterator = iter(lines)
    header = next(iterator, "").lstrip("\ufeff").rstrip("\r\n")
    if header != HEADER:
        raise DirectoryFileError("the header is not the directory extract's (columns differ)")
    batch: list[tuple[dict, dict]] = []
    with transaction.atomic():
        for line_number, line in enumerate(iterator, start=2):
            summary.lines_read += 1
            if progress and summary.lines_read % 10_000 == 0:
                progress(summary.lines_read)
            if not line.strip():
                continue
            parsed = _parse(line, departments)
            if parsed is OUT_OF_REGION:
                summary.lines_out_of_region += 1
                continue
            if isinstance(parsed, str):
                summary.skip(line_number, parsed)
                continue
            batch.append(parsed)
            if len(batch) >= BATCH_SIZE:
                _write_batch(run, batch, summary)
                batch = []
        if batch:
            _write_batch(run, batch, summary)
        # Activities of the persons seen that this extract no longer lists.
        summary.activities_removed, _ = (
            DirectoryActivity.objects.filter(person__last_import=run)
            .exclude(last_import=run)
            .delete()
        )
        # Persons stored are in-region ones only, so "absent" means absent from the region.
        summary.marked_inactive = (
            DirectoryPerson.objects.filter(is_active=True)
            .exclude(last_import=run)
            .update(is_active=False)
        )
    return summary


def refresh_changed(changed_rpps: set[str]) -> int:
    """Bring the portal's professionals among the persons a run changed up to date; how many
    changed. After the import's commit, each in its own transaction: a professional the
    portal cannot update (being edited) fails alone, and the directory stays imported."""
    # The portal's professionals are a few thousand, the changed persons up to the whole
    # region on a first run: intersect in Python rather than send either list to SQL.
    linked = changed_rpps & set(
        Professional.objects.filter(rpps__isnull=False).values_list("rpps", flat=True)
    )
    if not linked:
        return 0
    return refresh_linked_professionals(
        by=Actor.system("directory_import"),
        persons=DirectoryPerson.objects.filter(rpps__in=sorted(linked)),
    )


def import_file(path: Path, progress: Callable[[int], None] | None = None) -> DirectoryImport:
    path = Path(path)
    departments = region_departments()
    stat = path.stat() if path.is_file() else None
    run = DirectoryImport.objects.create(
        file_name=path.name,
        file_size=stat.st_size if stat else None,
        file_modified_at=(dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC) if stat else None),
        departments=",".join(sorted(departments)),
    )
    try:
        with open(path, encoding="utf-8", newline="") as lines:
            summary = import_lines(run, lines, departments, progress)
    except Exception as error:
        # Any failure, the database's included, is on the run's record; the data are untouched.
        run.failure = f"{type(error).__name__}: {error}"
        run.finished_at = timezone.now()
        run.save(update_fields=["failure", "finished_at"])
        raise
    try:
        summary.professionals_refreshed = refresh_changed(summary.changed_rpps)
    except Exception as error:
        # The directory is imported (committed); the professionals are brought up to date
        # by the next run that changes them, or by hand from the administration pages.
        logger.exception("directory %s: linked professionals not refreshed", path.name)
        run.failure = f"linked professionals not refreshed: {type(error).__name__}: {error}"
    run.counts = summary.counts()
    run.errors_sample = summary.errors
    run.finished_at = timezone.now()
    run.save(update_fields=["counts", "errors_sample", "finished_at", "failure"])
    return run


def latest_runs() -> dict:
    """The last run, and the last successful one when the last failed: what the directory's
    administration pages show first."""
    last = DirectoryImport.objects.order_by("-pk").first()
    succeeded = last
    if last is not None and (last.failure or last.finished_at is None):
        succeeded = (
            DirectoryImport.objects.filter(failure="", finished_at__isnull=False)
            .order_by("-pk")
            .first()
        )
    return {"last": last, "succeeded": succeeded}


def already_imported(path: Path) -> DirectoryImport | None:
    """The successful run of this very file (same name, size and modification time), if any:
    the scheduled refresh does not import the same extract every night."""
    stat = path.stat()
    return (
        DirectoryImport.objects.filter(
            file_name=path.name,
            file_size=stat.st_size,
            file_modified_at=dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC),
            finished_at__isnull=False,
            failure="",
        )
        .order_by("-pk")
        .first()
    )


EXTRACT_PATTERN = "PS_LibreAcces_Personne_activite_*.txt"


def newest_extract(location: Path) -> Path | None:
    """``location`` itself if a file, else the newest extract in that directory (by the
    date in its name, which sorts as text, then by modification time)."""
    if location.is_file():
        return location
    candidates = [path for path in location.glob(EXTRACT_PATTERN) if path.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda path: (path.name, path.stat().st_mtime))
