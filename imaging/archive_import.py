"""Migration of an establishment's existing archive: a folder tree or a DICOMDIR, imported file
by file through the one ingest (:func:`imaging.services.ingest_from_establishment`).

* **Sources.** A directory tree is walked with ``os.scandir``, one folder at a time, never
  listing every path at once; a DICOMDIR (PS3.10 §8, its Directory Record Sequence, PS3.3
  F.3.2.2) names its files by Referenced File ID, relative to the DICOMDIR's folder.
* **Workers.** Worker processes, forked after ``django.setup()``, each read files and call the
  ingest on small chunks. The parent routes every file of one study to the same worker (it
  reads the StudyInstanceUID from the header), so two workers never race to create the same
  study, series or instance. On SQLite the writers queue on the database's write lock
  (``timeout`` and ``IMMEDIATE`` transactions in the settings); a chunk hit by "database is
  locked" anyway is ingested again (the ingest is idempotent on SOPInstanceUID).
* **Journal.** A small SQLite file (not the portal's database) remembers each file's outcome.
  A file is written there as *sent* before a worker gets it and gets its outcome once the
  ingest answered: a second run skips every file with an outcome, and sends the *sent* ones
  again, which the ingest recognises (same SOPInstanceUID, same hash) without storing them
  twice. Killing the command, even with SIGKILL, loses nothing.
* **Audit.** One import event (DCM 110107) per study touched, written once per run by
  :func:`imaging.services.ingest_announce` (which also schedules its thumbnail), not per file;
  the studies still to announce are kept in the journal, so a killed run's are announced by
  the next.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
import multiprocessing
import os
import queue
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from django.conf import settings
from django.db import OperationalError, connections
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from imaging.archive import ArchiveUnavailable
from imaging.ingest_pool import after_fork, worker_for
from imaging.models import IngestItem, StudyOrigin
from imaging.services import ingest_announce, ingest_from_establishment
from imaging.validation import UploadedFile
from portal import audit
from portal.audit import Actor
from portal.models import Establishment

logger = logging.getLogger(__name__)

STORED, DUPLICATE, QUARANTINED, REFUSED = "stored", "duplicate", "quarantined", "refused"
OUTCOMES = (STORED, DUPLICATE, QUARANTINED, REFUSED)
OUTCOME_LABELS = {
    STORED: gettext_lazy("stored"),
    DUPLICATE: gettext_lazy("duplicate"),
    QUARANTINED: gettext_lazy("quarantined"),
    REFUSED: gettext_lazy("refused"),
}

CHUNK_FILES = 32  # files per ingest call: one sandboxed check and one study lookup for many
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker: enough to keep it busy, little to resend
DRAIN_TIMEOUT = 300.0  # seconds to wait for the chunks in flight after Ctrl-C
LOCKED_RETRIES = 5


class ImportStopped(Exception):
    """The archive does not answer: the run stops; the next one resumes."""


# --- Sources ----------------------------------------------------------------------------------


def is_dicomdir(path: Path) -> bool:
    return path.is_file() and path.name.upper() == "DICOMDIR"


def walk_tree(root: Path) -> Iterator[str]:
    """Every regular file under ``root``, folder by folder (sorted), symlinked folders not
    followed (no loops); DICOMDIR files are indexes, not images, and are left out."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                entries = sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            logger.warning("archive import: cannot read folder %s: %s", folder, error)
            continue
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
            elif entry.is_file() and entry.name.upper() != "DICOMDIR":
                yield entry.path
        stack.extend(reversed(subfolders))


def dicomdir_files(dicomdir: Path) -> Iterator[str]:
    """The files a DICOMDIR references (Referenced File ID, PS3.3 F.3.2.2), in record order.

    A Referenced File ID is a list of path components relative to the DICOMDIR's folder;
    one that would climb out of that folder is yielded as is and refused by the import.
    """
    ds = pydicom.dcmread(str(dicomdir), stop_before_pixels=True)
    base = dicomdir.parent
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        yield str(base.joinpath(*[str(part) for part in parts]))


def source_files(source: Path) -> Iterator[str]:
    if is_dicomdir(source):
        return dicomdir_files(source)
    return walk_tree(source)


def count_files(source: Path) -> int:
    return sum(1 for _path in source_files(source))


def _outside(path: str, root: str) -> bool:
    """Whether ``path`` (symlinks resolved) lies outside the folder ``root`` (resolved)."""
    return os.path.commonpath([os.path.realpath(path), root]) != root


# --- Journal ---------------------------------------------------------------------------------


class Journal:
    """What was sent and what came back, per file path, across runs (a SQLite file)."""

    def __init__(self, path: Path, *, finess: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One run at a time per journal: two would send the same files and count them twice.
        self._lock = open(f"{path}.lock", "w")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(_("another import is running with this journal")) from None
        self.db = sqlite3.connect(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS files (
                path TEXT PRIMARY KEY, outcome TEXT, reason TEXT NOT NULL DEFAULT '',
                sop TEXT NOT NULL DEFAULT '', study_uid TEXT NOT NULL DEFAULT '');
            CREATE INDEX IF NOT EXISTS files_sop ON files (sop);
            CREATE TABLE IF NOT EXISTS studies (
                study_id INTEGER PRIMARY KEY, announced INTEGER NOT NULL DEFAULT 0);
            """
        )
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('finess', ?)", (finess,))
        self.db.commit()
        (owner,) = self.db.execute("SELECT value FROM meta WHERE key = 'finess'").fetchone()
        if owner != finess:
            self.close()
            raise ValueError(
                _("this journal belongs to the import of establishment %(finess)s")
                % {"finess": owner}
            )

    def decided(self) -> set[str]:
        return {
            path for (path,) in self.db.execute("SELECT path FROM files WHERE outcome IS NOT NULL")
        }

    def in_flight(self) -> set[str]:
        return {path for (path,) in self.db.execute("SELECT path FROM files WHERE outcome IS NULL")}

    def sent(self, paths: list[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO files (path) VALUES (?)", [(p,) for p in paths])
        self.db.commit()

    def stored_path(self, sop: str) -> str | None:
        row = self.db.execute(
            "SELECT path FROM files WHERE sop = ? AND outcome = ? LIMIT 1", (sop, STORED)
        ).fetchone()
        return row[0] if row else None

    def record(self, rows: list[tuple], study_ids: set[int]) -> None:
        """rows: (path, outcome, reason, sop, study_uid); one commit for the chunk."""
        self.db.executemany(
            "INSERT INTO files (path, outcome, reason, sop, study_uid) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET outcome = excluded.outcome, "
            "reason = excluded.reason, sop = excluded.sop, study_uid = excluded.study_uid",
            rows,
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO studies (study_id) VALUES (?)", [(pk,) for pk in study_ids]
        )
        self.db.commit()

    def unannounced(self) -> list[int]:
        return [pk for (pk,) in self.db.execute("SELECT study_id FROM studies WHERE announced = 0")]

    def announced(self, study_ids: list[int]) -> None:
        self.db.executemany(
            "UPDATE studies SET announced = 1 WHERE study_id = ?", [(pk,) for pk in study_ids]
        )
        self.db.commit()

    def counts(self) -> Counter:
        return Counter(
            dict(
                self.db.execute(
                    "SELECT outcome, COUNT(*) FROM files WHERE outcome IS NOT NULL GROUP BY outcome"
                ).fetchall()
            )
        )

    def write_report(self, report: Path) -> int:
        """One CSV row per file not simply stored; returns how many rows."""
        report.parent.mkdir(parents=True, exist_ok=True)
        rows = self.db.execute(
            "SELECT path, outcome, reason, sop, study_uid FROM files "
            "WHERE outcome IS NOT NULL AND (outcome != ? OR reason != '') ORDER BY path",
            (STORED,),
        )
        count = 0
        partial = report.with_name(report.name + ".part")
        with partial.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "outcome", "reason", "sop_instance_uid", "study_instance_uid"])
            for row in rows:
                writer.writerow(row)
                count += 1
        partial.replace(report)
        return count

    def close(self) -> None:
        self.db.close()
        self._lock.close()


# --- One chunk, in a worker (or in-process) ----------------------------------------------------


@dataclass
class FileOutcome:
    """What the ingest answered for one file (picklable: it crosses from worker to parent)."""

    path: str
    status: str
    reason: str = ""
    sop: str = ""
    study_uid: str = ""
    study_id: int | None = None
    patient_id: int | None = None


def import_actor(establishment: Establishment) -> Actor:
    return Actor(name=f"archive_import ({establishment.finess} {establishment.name})"[:200])


def _study_uid_of(data_or_path) -> str:
    """StudyInstanceUID from a file's header, read up to that element only; '' when unreadable."""
    try:
        source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
        ds = pydicom.dcmread(source, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.get("StudyInstanceUID", ""))[:64]
    except Exception:  # noqa: BLE001 - not DICOM, truncated...: routed anywhere, refused later
        return ""


def ingest_chunk(
    paths: list[str],
    *,
    establishment: Establishment,
    actor: Actor,
    private: bool = False,
    verdicts: dict | None = None,
    origin: str = StudyOrigin.ACCESS_POINT,
) -> list[FileOutcome]:
    """Read ``paths`` and ingest them as ``establishment`` sends them; one outcome per path.

    ``private``: the files are the caller's own and do not change (the gateway's spool),
    so the sandbox child may read them from disk rather than receive their bytes; an
    establishment's archive being imported could change between the two reads. Private
    files may come with their sandboxed checks' ``verdicts`` (path -> validation.file_verdicts).

    ``origin``: recorded on the studies created (StudyOrigin): the gateway's spool comes
    from its access point, this module's own runs are a migration.

    Raises ArchiveUnavailable (nothing of the chunk is decided then).
    """
    outcomes: dict[str, FileOutcome] = {}
    uploads = []
    max_bytes = settings.INGEST_MAX_FILE_BYTES
    for path in paths:
        try:
            if os.path.getsize(path) > max_bytes:
                outcomes[path] = FileOutcome(path, IngestItem.Status.REJECTED, _("file too large"))
                continue
            with open(path, "rb") as stream:
                data = stream.read()
            upload = UploadedFile(path, data, path if private else "")
            if private and verdicts is not None and path in verdicts:
                upload.verdict, upload.checked = verdicts[path], True
            uploads.append(upload)
        except OSError as error:
            outcomes[path] = FileOutcome(
                path,
                IngestItem.Status.REJECTED,
                _("unreadable file (%(error)s)") % {"error": error.strerror or error},
            )
    results = _ingest(uploads, establishment, actor, origin)
    # A study that failed inside the ingest (a lock that outlasted its timeout, two workers
    # racing on one SOPInstanceUID) is answered "internal error": once more, alone. The
    # ingest is idempotent: what was stored comes back as stored.
    internal = _("this file could not be stored (internal error, reported)")
    again = [
        i
        for i, r in enumerate(results)
        if r.status == IngestItem.Status.REJECTED and str(r.reason) == internal
    ]
    if again:
        retried = _ingest([uploads[i] for i in again], establishment, actor, origin)
        for index, result in zip(again, retried, strict=True):
            results[index] = result
    for upload, result in zip(uploads, results, strict=True):
        study = result.study
        outcomes[upload.name] = FileOutcome(
            upload.name,
            result.status,
            str(result.reason),
            result.sop_instance_uid,
            study.study_instance_uid if study else _study_uid_of(upload.data),
            study.pk if study else None,
            study.patient_id if study else None,
        )
    return [outcomes[path] for path in paths]


def _ingest(uploads, establishment, actor, origin) -> list:
    for attempt in range(LOCKED_RETRIES + 1):
        try:
            return ingest_from_establishment(
                uploads=uploads, establishment=establishment, by=actor, origin=origin
            )
        except OperationalError as error:
            # SQLite's write lock outlasted its timeout: the ingest is idempotent, again.
            if "locked" not in str(error) or attempt == LOCKED_RETRIES:
                raise
            connections["default"].close()
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


# --- Worker processes ----------------------------------------------------------------------------


def _worker(establishment_pk: int, tasks, results, parent_pid: int) -> None:
    after_fork()
    establishment = Establishment.objects.get(pk=establishment_pk)
    actor = import_actor(establishment)
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the parent was killed: its next run resends what was in flight
                continue
            if task is None:
                return
            chunk_id, paths = task
            try:
                results.put(
                    (
                        chunk_id,
                        "done",
                        ingest_chunk(
                            paths,
                            establishment=establishment,
                            actor=actor,
                            origin=StudyOrigin.MIGRATION,
                        ),
                    )
                )
            except ArchiveUnavailable as error:
                results.put((chunk_id, "unavailable", str(error)))
            except Exception:  # noqa: BLE001 - reported; the files are refused, the run goes on
                logger.exception("archive import: chunk failed")
                results.put((chunk_id, "failed", ""))
    finally:
        connections.close_all()


# --- The import ---------------------------------------------------------------------------------


@dataclass
class Summary:
    counts: Counter  # outcome -> files, whole import (every run of this journal)
    this_run: int = 0  # files decided by this run
    skipped: int = 0  # files an earlier run decided
    seconds: float = 0.0
    report_rows: int = 0
    interrupted: bool = False
    stopped: str = ""  # why the run stopped early (archive unavailable)
    studies_announced: int = 0

    @property
    def rate(self) -> float:
        return self.this_run / self.seconds if self.seconds else 0.0


@dataclass
class _Run:
    journal: Journal
    in_flight_before: set[str]
    counts: Counter = field(default_factory=Counter)
    done: int = 0


class Progress:
    """One line rewritten on a terminal (files done/total, files/s, ETA); periodic lines else."""

    def __init__(self, total: int, *, stream=None, interval: float | None = None):
        self.total = total
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.started = time.monotonic()
        self.last = 0.0

    def line(self, done: int, counts: Counter, skipped: int = 0) -> str:
        """``done`` files decided by this run, ``skipped`` by earlier runs (not in the rate)."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        left = self.total - done - skipped
        remaining = 0 if left <= 0 else (left / rate if rate else None)
        done += skipped
        eta = _duration(remaining) if remaining is not None else "?"
        percent = 100 * done / self.total if self.total else 100
        detail = (
            ", ".join(f"{OUTCOME_LABELS[name]} {counts[name]}" for name in OUTCOMES if counts[name])
            or "-"
        )
        return _(
            "%(done)d/%(total)d files %(percent)3.0f%% %(rate).1f files/s, "
            "%(eta)s left (%(detail)s)"
        ) % {
            "done": done,
            "total": self.total,
            "percent": percent,
            "rate": rate,
            "eta": eta,
            "detail": detail,
        }

    def update(self, done: int, counts: Counter, skipped: int = 0, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        line = self.line(done, counts, skipped)
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _decide(run: _Run, outcomes: list[FileOutcome]) -> None:
    """Journal one chunk's outcomes (one commit) and count them."""
    rows, study_ids = [], set()
    # The first copy of an image may be stored by the same chunk as its duplicate.
    stored_here = {
        item.sop: item.path for item in outcomes if item.status == IngestItem.Status.ACCEPTED
    }
    for item in outcomes:
        if item.status == IngestItem.Status.ACCEPTED:
            outcome, reason = STORED, item.reason
        elif item.status == IngestItem.Status.DUPLICATE and item.path in run.in_flight_before:
            # Sent by a run that was stopped before it could write the answer: stored then.
            outcome, reason = STORED, item.reason
        elif item.status == IngestItem.Status.DUPLICATE:
            first = stored_here.get(item.sop) or run.journal.stored_path(item.sop)
            outcome = DUPLICATE
            reason = (
                _("same image as %(path)s") % {"path": first}
                if first
                else _("already in the archive with the same content")
            )
        elif item.status == IngestItem.Status.QUARANTINED:
            outcome, reason = QUARANTINED, item.reason
        else:
            outcome, reason = REFUSED, item.reason or _("refused")
        if item.study_id is not None and outcome in (STORED, DUPLICATE):
            study_ids.add(item.study_id)
        rows.append((item.path, outcome, reason[:300], item.sop, item.study_uid))
        run.counts[outcome] += 1
    run.journal.record(rows, study_ids)
    run.done += len(outcomes)


def _failed(paths: list[str]) -> list[FileOutcome]:
    reason = _("this file could not be stored (internal error, reported)")
    return [FileOutcome(path, IngestItem.Status.REJECTED, reason) for path in paths]


def announce(journal: Journal, actor: Actor) -> int:
    """The import audit and thumbnail of every study stored into and not yet announced."""
    study_ids = journal.unannounced()
    if study_ids:
        ingest_announce(study_ids=study_ids, actor=actor)
        journal.announced(study_ids)
    return len(study_ids)


def default_journal(establishment: Establishment) -> Path:
    return Path(settings.VAR_DIR) / f"archive_import-{establishment.finess}.sqlite"


def run_import(
    *,
    source: Path,
    establishment: Establishment,
    workers: int,
    journal_path: Path,
    report_path: Path,
    progress: Progress | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> Summary:
    """Import every file of ``source`` not decided by an earlier run of this journal.

    ``workers=0`` ingests in this process (tests, small imports). ``on_chunk(done)`` is
    called after each chunk is journaled; a KeyboardInterrupt from it (or Ctrl-C) stops
    the run as a user's would. Raises ValueError when the journal is another
    establishment's.
    """
    started = time.monotonic()
    journal = Journal(journal_path, finess=establishment.finess)
    actor = import_actor(establishment)
    summary = Summary(counts=Counter())
    try:
        decided = journal.decided()
        run = _Run(journal=journal, in_flight_before=journal.in_flight())
        announce(journal, actor)  # what a killed run stored and could not announce

        # A DICOMDIR names its files: none may be read from outside the medium's folder.
        medium = os.path.realpath(source.parent) if is_dicomdir(source) else None

        def pending() -> Iterator[str]:
            for path in source_files(source):
                path = os.path.abspath(path)
                if path in decided:
                    summary.skipped += 1
                    continue
                if medium is not None and _outside(path, medium):
                    _decide(
                        run,
                        [
                            FileOutcome(
                                path,
                                IngestItem.Status.REJECTED,
                                _("the DICOMDIR names a file outside its folder"),
                            )
                        ],
                    )
                    continue
                yield path

        def after_chunk() -> None:
            if progress is not None:
                progress.update(run.done, run.counts, summary.skipped)
            if on_chunk is not None:
                on_chunk(run.done)

        try:
            if workers <= 0:
                _run_here(run, pending(), establishment, actor, after_chunk)
            else:
                _run_workers(run, pending(), establishment, workers, after_chunk)
        except KeyboardInterrupt:
            summary.interrupted = True
        except ImportStopped as error:
            summary.stopped = str(error)
        if progress is not None:
            progress.update(run.done, run.counts, summary.skipped, final=True)
        summary.studies_announced = announce(journal, actor)
        _audit_refusals(run, establishment, actor)
        summary.this_run = run.done
        summary.counts = journal.counts()
        summary.report_rows = journal.write_report(report_path)
    finally:
        journal.close()
    summary.seconds = time.monotonic() - started
    return summary


def _audit_refusals(run: _Run, establishment: Establishment, actor: Actor) -> None:
    """Files refused or quarantined by this run: one transfer event, as the gateway writes
    for an association's refusals (DCM 110104, minor failure), without a patient."""
    refused = run.counts[REFUSED] + run.counts[QUARANTINED]
    if not refused:
        return
    audit.record(
        actor=actor,
        event=audit.AuditEventId.INSTANCES_TRANSFERRED,
        action=audit.AuditAction.CREATE,
        outcome=audit.AuditOutcome.MINOR_FAILURE,
        object_type="archive_import",
        object_id=establishment.finess,
        detail={
            "establishment": establishment.finess,
            "refused": run.counts[REFUSED],
            "quarantined": run.counts[QUARANTINED],
        },
    )


def _chunks(paths: Iterator[str]) -> Iterator[list[str]]:
    chunk = []
    for path in paths:
        chunk.append(path)
        if len(chunk) >= CHUNK_FILES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_here(run, paths, establishment, actor, after_chunk) -> None:
    for chunk in _chunks(paths):
        run.journal.sent(chunk)
        try:
            outcomes = ingest_chunk(
                chunk, establishment=establishment, actor=actor, origin=StudyOrigin.MIGRATION
            )
        except ArchiveUnavailable as error:
            logger.warning("archive import: archive unavailable: %s", error)
            raise ImportStopped(_("the archive does not answer")) from error
        _decide(run, outcomes)
        after_chunk()


def _run_workers(run, paths, establishment, workers, after_chunk) -> None:
    """Feed the workers, each with every file of the studies that hash to it."""
    context = multiprocessing.get_context("fork")
    connections.close_all()  # the workers open their own
    results = context.Queue()
    task_queues = [context.Queue() for _ in range(workers)]
    processes = [
        context.Process(
            target=_worker,
            args=(establishment.pk, task_queues[index], results, os.getpid()),
            # Not daemonic: a worker's ingest starts sandboxed children of its own. A worker
            # whose parent was killed notices (getppid) and leaves.
            daemon=False,
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    in_flight: dict[int, tuple[int, list[str]]] = {}  # chunk id -> (worker, paths)
    per_worker = [0] * workers
    buffers: list[list[str]] = [[] for _ in range(workers)]
    next_id = 0

    def collect(block: bool, timeout: float = 1.0) -> None:
        try:
            chunk_id, kind, payload = results.get(block=block, timeout=timeout)
        except queue.Empty:
            for process in processes:
                if not process.is_alive() and process.exitcode not in (0, None):
                    logger.error("archive import: worker died, exit code %s", process.exitcode)
                    raise ImportStopped(_("an import worker stopped unexpectedly")) from None
            return
        worker, chunk = in_flight.pop(chunk_id)
        per_worker[worker] -= 1
        if kind == "unavailable":
            logger.warning("archive import: archive unavailable: %s", payload)
            raise ImportStopped(_("the archive does not answer"))
        _decide(run, payload if kind == "done" else _failed(chunk))
        after_chunk()

    def send(worker: int) -> None:
        nonlocal next_id
        chunk, buffers[worker] = buffers[worker], []
        while per_worker[worker] >= IN_FLIGHT_PER_WORKER:
            collect(block=True)
        run.journal.sent(chunk)
        in_flight[next_id] = (worker, chunk)
        per_worker[worker] += 1
        task_queues[worker].put((next_id, chunk))
        next_id += 1

    try:
        for path in paths:
            study_uid = _study_uid_of(path)
            worker = worker_for(study_uid, workers, fallback=next_id)
            buffers[worker].append(path)
            if len(buffers[worker]) >= CHUNK_FILES:
                send(worker)
            while True:  # journal what came back meanwhile
                before = len(in_flight)
                collect(block=False)
                if len(in_flight) == before:
                    break
        for worker in range(workers):
            if buffers[worker]:
                send(worker)
        while in_flight:
            collect(block=True)
    except (KeyboardInterrupt, ImportStopped):
        # Stop feeding; what the workers took is answered and journaled before leaving.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C leaves at once
            while in_flight and time.monotonic() < deadline:
                with contextlib.suppress(ImportStopped):
                    collect(block=True)
        raise
    finally:
        for task_queue in task_queues:
            task_queue.put(None)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
