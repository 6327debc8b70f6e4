"""The regional archive as a real PACS/VNA reached through DICOMweb (PS3.18).

Searches (QIDO-RS, PS3.18 §10.6) and study metadata (WADO-RS, §10.4) go through the
maintained ``dicomweb-client``. Three transactions are written here, on the same session,
because the client re-encodes what must stay byte for byte: its ``retrieve_instance``
returns a parsed pydicom dataset, its ``store_instances`` re-serialises datasets with
``dcmwrite``, and its ``retrieve_instance_frames`` drops the transfer syntax the archive
names in its answer.

What Orthanc 1.10.1 with its DICOMweb plugin 1.7 (the Debian packages) does, measured
against the tests of ``tests/test_archive_contract.py``:

* QIDO-RS query values are not percent-decoded: ``PatientName=DUPO%2A`` matches the
  literal ``DUPO%2A``. Wildcards (``*``, ``?``) and list commas are therefore sent as they
  are, which RFC 3986 §3.4 allows in a query, and characters that must be escaped (``^``,
  spaces, accents) are replaced by wildcards: a slightly wider match, never a narrower one.
* WADO-RS of an instance with ``transfer-syntax=*`` returns the stored file byte for byte.
* WADO-RS frames with ``transfer-syntax=*`` returns the stored frames (native, RLE,
  JPEG-LS, JPEG 2000) and names their transfer syntax in each part's Content-Type; without
  it Orthanc transcodes to Explicit VR Little Endian (and answers 500 for JPEG 2000). A
  frame number beyond the last frame is answered 400, reported here as ArchiveNotFound.
  For an Explicit VR Big Endian instance it answers 500 ("Internal error") to
  ``transfer-syntax=*``: the frames are then cut from the instance, retrieved as stored.
* STOW-RS of a known SOPInstanceUID answers 200 and lists the instance as stored although
  the original is kept (``OverwriteInstances`` false): duplicates and conflicts are found
  by a lookup before storing. A part it cannot parse is dropped without a FailedSOPSequence
  item (the answer is 400): a file missing from the answer is reported as refused.
"""

from __future__ import annotations

import queue
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import requests
import urllib3
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging import dicom
from imaging.archive import (
    Archive,
    ArchiveError,
    ArchiveNotFound,
    ArchiveUnavailable,
    Frames,
    StoreOutcome,
    StoreStatus,
)

# QIDO-RS matching keys understood by both archives (those of LocalArchive).
UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
LIST_KEYS = {"ModalitiesInStudy", "Modality"}
TEXT_KEYS = {"PatientID", "IssuerOfPatientID", "AccessionNumber", "PatientName"}
DATE_KEYS = {"StudyDate", "PatientBirthDate"}
NUMBER_KEYS = {"SeriesNumber", "InstanceNumber"}
IGNORED_PARAMETERS = {"includefield", "fuzzymatching", "limit", "offset"}

STUDY_FIELDS = (
    *dicom.STUDY_KEYWORDS,
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_FIELDS = (*dicom.SERIES_KEYWORDS, "StudyInstanceUID", "NumberOfSeriesRelatedInstances")
INSTANCE_FIELDS = (*dicom.INSTANCE_KEYWORDS, "StudyInstanceUID", "SeriesInstanceUID")

RETRIEVE_URL = "00081190"  # the archive's own address: meaningless to the portal's clients
PIXEL_DATA = "7FE00010"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"

INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# Answers to a frames request meaning "not in the stored syntax", not "archive down".
FRAMES_REFUSED = {406, 415, 500, 501}
LOOKUP_BATCH = 40  # SOPInstanceUIDs per QIDO-RS lookup: keeps the URL under 4 kB
STOW_BATCH_FILES = 50
STOW_BATCH_BYTES = 64 * 1024 * 1024
CONFLICT_REASON = "an instance with this SOPInstanceUID and other content is already archived"
MISSING_UIDS_REASON = "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID"

# Characters a QIDO-RS value keeps unescaped once the session has restored * ? and ,.
_LITERAL_QUERY_CHARACTER = re.compile(r"[A-Za-z0-9_.~*?-]")
_RESTORED_ESCAPES = re.compile(r"%(2A|3F|2C)", re.IGNORECASE)


class _ArchiveSession(requests.Session):
    """A session whose every request is bounded, and whose QIDO wildcards stay literal."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout
        # Frames are already compressed or large binaries: gzip on the archive's side costs
        # far more time (measured: 57 ms against 8 ms for a 512x512 CT frame) than it saves.
        self.headers["Accept-Encoding"] = "identity"

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if request.headers.get("Accept") == "application/dicom+json, application/json":
            # dicomweb-client's QIDO-RS Accept, which Orthanc 1.10 logs as an error.
            request.headers["Accept"] = "application/dicom+json"
        base, mark, query = request.url.partition("?")
        if mark:
            # dicomweb-client escapes * ? , (quote_plus); Orthanc 1.10 does not decode them.
            escaped = {"2A": "*", "3F": "?", "2C": ","}
            query = _RESTORED_ESCAPES.sub(lambda m: escaped[m.group(1).upper()], query)
            request.url = f"{base}?{query}"
        try:
            return super().send(request, **kwargs)
        except requests.ConnectionError as error:
            if not _stale_connection(error):
                raise
            # A kept-alive connection the archive closed while idle (Orthanc's keep-alive
            # timeout) fails the first request sent on it, unanswered. urllib3 drops the
            # dead connection: one retry goes out on a fresh one. Every request the portal
            # sends may go twice: searches and retrievals read, and a STOW of instances
            # already stored is answered as stored (duplicates are kept once). Only once:
            # a second failure is the archive's, and is reported as such.
            return super().send(request, **kwargs)


@dataclass(frozen=True)
class _Part:
    headers: dict[str, str]
    content: bytes


class DicomWebArchive(Archive):
    name = "dicomweb"

    def __init__(self, url: str, *, timeout: float):
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        # requests.Session is not documented thread-safe, and under ASGI each request runs
        # in a thread of its own: sessions (and their open connections) are lent out from
        # a process-wide pool, one request at a time, instead of one per thread.
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._lent = threading.local()

    # --- transport ---------------------------------------------------------------------------

    def _new_pair(self) -> tuple[_ArchiveSession, DICOMwebClient]:
        session = _ArchiveSession(self.timeout)
        client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
        # Its default retries 503/504/429/408 five times with exponential back-off,
        # far beyond ARCHIVE_TIMEOUT: the portal reports and lets the user retry.
        client.set_http_retry_params(retry=False)
        return session, client

    @contextmanager
    def _lease(self) -> Iterator[tuple[_ArchiveSession, DICOMwebClient]]:
        current = getattr(self._lent, "pair", None)
        if current is not None:  # nested use within one call
            yield current
            return
        try:
            pair = self._pool.get_nowait()
        except queue.Empty:
            pair = self._new_pair()
        self._lent.pair = pair
        try:
            yield pair
        finally:
            self._lent.pair = None
            self._pool.put(pair)

    def _session(self) -> _ArchiveSession:
        pair = getattr(self._lent, "pair", None)
        return pair[0] if pair is not None else self._new_pair()[0]

    def _client(self) -> DICOMwebClient:
        pair = getattr(self._lent, "pair", None)
        return pair[1] if pair is not None else self._new_pair()[1]

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn what requests and dicomweb-client raise into the archive's errors; the
        session and client used inside are lent from the pool for the block."""
        try:
            with self._lease():
                yield
        except requests.HTTPError as error:
            raise self._status_error(error.response, action) from error
        except requests.exceptions.JSONDecodeError as error:
            raise ArchiveError(f"{action}: the archive's answer is not DICOM JSON") from error
        except requests.Timeout as error:
            raise ArchiveUnavailable(self._timeout_reason(action)) from error
        except requests.RequestException as error:
            raise ArchiveUnavailable(self._connection_reason(action, error)) from error
        except ValueError as error:  # dicomweb-client on a malformed answer
            raise ArchiveError(f"{action}: unexpected answer from the archive ({error})") from error

    def _timeout_reason(self, action: str) -> str:
        return f"{action}: the archive did not answer within {self.timeout:g} s"

    def _connection_reason(self, action: str, error: Exception) -> str:
        text = str(error)
        if "timed out" in text.lower():
            return self._timeout_reason(action)
        errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        if errno:
            cause = errno.group(1).strip().lower()
        elif "aborted" in text.lower() or "disconnected" in text.lower():
            cause = "connection closed by the archive"
        else:
            cause = "connection failed"
        return f"{action}: archive unreachable at {self.url} ({cause})"

    def _status_error(self, response: requests.Response, action: str) -> ArchiveError:
        status = response.status_code
        detail = ""
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("Message"), str):
                detail = f": {body['Message'][:100]}"  # Orthanc explains its errors so
        except ValueError:
            pass
        if status == 404:
            return ArchiveNotFound(f"{action}: not in the archive")
        if status >= 500 or status in (408, 429):
            return ArchiveUnavailable(f"{action}: the archive failed (HTTP {status}{detail})")
        return ArchiveError(f"{action}: the archive refused the request (HTTP {status}{detail})")

    def _send(self, method: str, url: str, *, action: str, **kwargs) -> requests.Response:
        """One request on the session; transport failures raised, HTTP status left to check."""
        with self._translated(action):
            return self._session().request(method, url, **kwargs)

    def _check(self, response: requests.Response, action: str) -> requests.Response:
        if response.status_code >= 400:
            raise self._status_error(response, action)
        return response

    # --- search (QIDO-RS) --------------------------------------------------------------------

    def search_studies(self, query=None, *, limit=None, offset=0) -> list[dict]:
        """QIDO-RS Search for Studies (PS3.18 §10.6.1), with the study counts (§10.6.3.3.1)."""
        filters = _qido_filters(query)
        with self._translated("search studies"):
            results = self._client().search_for_studies(
                limit=limit or None,
                offset=offset or None,
                fields=_tags(STUDY_FIELDS),
                search_filters=filters,
            )
        return [_cleaned_result(result) for result in results]

    def search_series(self, study_uid, query=None) -> list[dict]:
        """QIDO-RS Search for Series of a study (PS3.18 §10.6.1)."""
        filters = _qido_filters(query)
        if not _is_uid(study_uid):
            return []  # as for any unknown study
        with self._translated(f"search series of study {study_uid}"):
            results = self._client().search_for_series(
                study_uid, fields=_tags(SERIES_FIELDS), search_filters=filters
            )
        return [_cleaned_result(result) for result in results]

    def search_instances(self, study_uid, series_uid=None, query=None) -> list[dict]:
        """QIDO-RS Search for Instances of a study or series (PS3.18 §10.6.1)."""
        filters = _qido_filters(query)
        if not _is_uid(study_uid) or (series_uid and not _is_uid(series_uid)):
            return []
        with self._translated(f"search instances of study {study_uid}"):
            results = self._client().search_for_instances(
                study_uid, series_uid or None, fields=_tags(INSTANCE_FIELDS), search_filters=filters
            )
        results = [_cleaned_result(result) for result in results]
        # LocalArchive's order; QIDO-RS leaves it to the archive.
        results.sort(key=lambda result: _instance_number_key(result))
        return results

    # --- retrieve (WADO-RS) ------------------------------------------------------------------

    def study_metadata(self, study_uid) -> list[dict]:
        """WADO-RS Retrieve Study Metadata (PS3.18 §10.4.1.1.2), without any bulk data.

        Bulk data references (``BulkDataURI``, PS3.18 §F.2.6) point into the archive and
        are left out, PixelData included, as LocalArchive leaves out bulk data.
        """
        if not _is_uid(study_uid):
            raise ArchiveNotFound(f"study {study_uid}")
        with self._translated(f"metadata of study {study_uid}"):
            metadata = self._client().retrieve_study_metadata(study_uid)
        if not metadata:
            raise ArchiveNotFound(f"study {study_uid}")
        metadata = [_without_bulk_references(dataset) for dataset in metadata]
        metadata.sort(
            key=lambda dataset: (
                dicom.json_value(dataset, "SeriesInstanceUID", ""),
                _instance_number_key(dataset),
            )
        )
        return metadata

    def _instance_url(self, study_uid, series_uid, sop_uid) -> str:
        if not all(_is_uid(uid) for uid in (study_uid, series_uid, sop_uid)):
            raise ArchiveNotFound(f"instance {sop_uid}")
        return f"{self.url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"

    def retrieve_instance(self, study_uid, series_uid, sop_uid) -> bytes:
        """WADO-RS Retrieve Instance (PS3.18 §10.4) as stored: ``transfer-syntax=*``
        (PS3.18 §8.7.3.5.2) asks for no transcoding."""
        url = self._instance_url(study_uid, series_uid, sop_uid)
        action = f"retrieve instance {sop_uid}"
        response = self._check(
            self._send("GET", url, action=action, headers={"Accept": INSTANCE_ACCEPT}), action
        )
        parts = _multipart_parts(response, action)
        if len(parts) != 1 or parts[0].content[128:132] != b"DICM":
            raise ArchiveError(f"{action}: the archive did not answer with one DICOM file")
        return parts[0].content

    def retrieve_frames(self, study_uid, series_uid, sop_uid, frame_numbers) -> Frames:
        """WADO-RS Retrieve Frames (PS3.18 §10.4.1.1.6) in the stored transfer syntax.

        The archive's frames resource is asked for ``transfer-syntax=*`` (PS3.18 §8.7.3.5.2):
        Orthanc then serves the stored frames, native or encapsulated (PS3.5 §A.4), without
        decoding the instance. Should an archive not serve them so (406 Not Acceptable, or
        no transfer syntax named), the instance is retrieved and cut into frames here.
        """
        numbers = [int(number) for number in frame_numbers]
        url = self._instance_url(study_uid, series_uid, sop_uid)
        if any(number < 1 for number in numbers):
            raise ArchiveNotFound(f"frames {numbers} of instance {sop_uid}")
        if not numbers:
            first = self.retrieve_frames(study_uid, series_uid, sop_uid, [1])
            return Frames(first.transfer_syntax_uid, [])
        action = f"retrieve frames {numbers} of instance {sop_uid}"
        response = self._send(
            "GET",
            f"{url}/frames/{','.join(str(number) for number in numbers)}",
            action=action,
            headers={"Accept": FRAMES_ACCEPT},
        )
        if response.status_code in FRAMES_REFUSED:
            # The archive will not cut these frames as stored: Orthanc 1.10 answers 500 to
            # ``transfer-syntax=*`` for Explicit VR Big Endian instances.
            # The instance itself comes back as stored; the frames are cut from it here.
            # Should the archive really be failing, that retrieval reports it (503).
            return self._frames_from_instance(study_uid, series_uid, sop_uid, numbers)
        if response.status_code == 400:
            # Orthanc's answer to a frame beyond the last one, or to an instance without
            # pixel data; the frame numbers themselves were checked above.
            raise ArchiveNotFound(f"{action}: {_orthanc_message(response) or 'no such frame'}")
        self._check(response, action)
        parts = _multipart_parts(response, action)
        if len(parts) != len(numbers):
            raise ArchiveError(f"{action}: the archive answered {len(parts)} frames")
        syntax = transfer_syntax(parts[0].headers.get("content-type", "")) or transfer_syntax(
            response.headers.get("Content-Type", "")
        )
        if syntax is None:
            return self._frames_from_instance(study_uid, series_uid, sop_uid, numbers)
        return Frames(syntax, [part.content for part in parts])

    def _frames_from_instance(self, study_uid, series_uid, sop_uid, numbers) -> Frames:
        data = self.retrieve_instance(study_uid, series_uid, sop_uid)
        ds = dicom.read_full(data)
        try:
            frames = dicom.extract_frames(ds, numbers)
        except IndexError as error:
            raise ArchiveNotFound(f"instance {sop_uid}: {error}") from error
        return Frames(str(ds.file_meta.TransferSyntaxUID), frames)

    # --- store (STOW-RS) ---------------------------------------------------------------------

    def store(self, files: Sequence[bytes]) -> list[StoreOutcome]:
        """STOW-RS Store Instances (PS3.18 §10.5), one outcome per file, in order.

        A file whose SOPInstanceUID the archive already holds is not sent: it is compared
        with the archived copy, data set to data set (the File Meta Information, PS3.10
        §7.1, is the sender's envelope), and reported as a duplicate or a conflict.
        """
        outcomes: list[StoreOutcome | None] = [None] * len(files)
        readable: list[tuple[int, str, bytes]] = []
        for index, data in enumerate(files):
            try:
                ds = dicom.read_header(data)
                sop_uid = str(ds.SOPInstanceUID)
                study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
                str(ds.file_meta.TransferSyntaxUID)
            except Exception as error:  # noqa: BLE001 - the outcome carries the reason
                outcomes[index] = StoreOutcome(
                    "", StoreStatus.FAILED, f"not a readable DICOM file: {error}"
                )
                continue
            if not (sop_uid and study_uid and series_uid):
                outcomes[index] = StoreOutcome(sop_uid, StoreStatus.FAILED, MISSING_UIDS_REASON)
                continue
            readable.append((index, sop_uid, data))

        archived = self.locate_instances({sop_uid for _, sop_uid, _ in readable})
        reference: dict[str, bytes] = {}  # the copy each later file of the batch is compared to
        to_send: list[tuple[int, str, bytes]] = []
        followers: dict[str, list[int]] = {}  # files compared to one still to be sent
        for index, sop_uid, data in readable:
            if sop_uid not in reference and sop_uid in archived:
                with suppress(ArchiveNotFound):  # deleted meanwhile: this one is stored
                    reference[sop_uid] = self.retrieve_instance(*archived[sop_uid], sop_uid)
            if sop_uid in reference:
                outcomes[index] = _compared(sop_uid, reference[sop_uid], data)
                if sop_uid in followers:
                    followers[sop_uid].append(index)
            else:
                reference[sop_uid] = data
                followers[sop_uid] = []
                to_send.append((index, sop_uid, data))

        for batch in _stow_batches(to_send):
            refused = self._stow([(sop_uid, data) for _, sop_uid, data in batch])
            for index, sop_uid, _ in batch:
                if sop_uid in refused:
                    outcomes[index] = StoreOutcome(sop_uid, StoreStatus.FAILED, refused[sop_uid])
                    for follower in followers[sop_uid]:
                        outcomes[follower] = StoreOutcome(
                            sop_uid, StoreStatus.FAILED, refused[sop_uid]
                        )
                else:
                    outcomes[index] = StoreOutcome(sop_uid, StoreStatus.STORED)
        return outcomes  # type: ignore[return-value] - every index was filled

    def locate_instances(self, sop_uids: set[str]) -> dict[str, tuple[str, str]]:
        """Study and series of the instances the archive already holds (QIDO-RS UID list
        matching, PS3.18 §8.3.4.1), looked up ``LOOKUP_BATCH`` at a time."""
        uids = sorted(uid for uid in sop_uids if _is_uid(uid))
        locations: dict[str, tuple[str, str]] = {}
        for start in range(0, len(uids), LOOKUP_BATCH):
            chunk = uids[start : start + LOOKUP_BATCH]
            with self._translated("look up archived instances"):
                results = self._client().search_for_instances(
                    fields=["0020000D", "0020000E"],
                    search_filters={"SOPInstanceUID": ",".join(chunk)},
                )
            for result in results:
                sop_uid = dicom.json_value(result, "SOPInstanceUID")
                study_uid = dicom.json_value(result, "StudyInstanceUID")
                series_uid = dicom.json_value(result, "SeriesInstanceUID")
                if sop_uid in chunk and study_uid and series_uid:
                    locations[sop_uid] = (study_uid, series_uid)
        return locations

    def _stow(self, files: list[tuple[str, bytes]]) -> dict[str, str]:
        """POST one multipart/related request (PS3.18 §10.5.1); the refused SOPInstanceUIDs
        with their reason (Store Instances Response Module, PS3.18 §10.5.3)."""
        boundary = uuid.uuid4().hex.encode()
        body = b"".join(
            b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
            for _, data in files
        )
        body += b"--" + boundary + b"--\r\n"
        action = f"store {len(files)} instance(s)"
        response = self._send(
            "POST",
            f"{self.url}/studies",
            action=action,
            data=body,
            headers={
                "Content-Type": (
                    f'multipart/related; type="application/dicom"; boundary={boundary.decode()}'
                ),
                "Accept": "application/dicom+json",
            },
        )
        # 200 all stored, 202 some refused, 409 none stored (PS3.18 §10.5.3); Orthanc says 400.
        if response.status_code >= 500 or response.status_code not in (200, 202, 400, 409):
            self._check(response, action)
            raise ArchiveError(f"{action}: unexpected answer (HTTP {response.status_code})")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._check(response, action)
            raise ArchiveError(f"{action}: the archive's answer is not DICOM JSON")
        stored = {
            item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
            for item in answer.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
        }
        failures = {}
        for item in answer.get(FAILED_SOP_SEQUENCE, {}).get("Value", []):
            sop_uid = item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
            code = item.get(FAILURE_REASON, {}).get("Value", [None])[0]
            if sop_uid:
                failures[sop_uid] = (
                    f"refused by the archive (failure reason 0x{int(code):04X})"
                    if isinstance(code, int)
                    else "refused by the archive"
                )
        refused = {}
        message = _orthanc_message(response)
        for sop_uid, _ in files:
            if sop_uid in failures:
                refused[sop_uid] = failures[sop_uid]
            elif sop_uid not in stored:
                refused[sop_uid] = f"not stored by the archive (HTTP {response.status_code}" + (
                    f": {message})" if message else ")"
                )
        return refused

    # --- health ------------------------------------------------------------------------------

    def health(self) -> str:
        """ "ok" when a one-study QIDO-RS search answers, else the reason."""
        try:
            with self._translated("search studies"):
                self._client().search_for_studies(limit=1)
        except ArchiveError as error:
            return str(error)[:200]
        return "ok"


# --- helpers ---------------------------------------------------------------------------------


def _is_uid(value) -> bool:
    return isinstance(value, str) and UID(value).is_valid


def _tags(keywords: Sequence[str]) -> list[str]:
    return [dicom.tag_hex(keyword) for keyword in keywords]


def _qido_value(value: str) -> str:
    """A text matching value Orthanc 1.10 compares as sent: characters the query would
    escape become wildcards (``?`` for one ASCII character, ``*`` for others)."""
    characters = []
    for character in value:
        if _LITERAL_QUERY_CHARACTER.fullmatch(character):
            characters.append(character)
        else:
            characters.append("?" if character.isascii() else "*")
    return re.sub(r"\*+", "*", "".join(characters))


def _qido_filters(query: Mapping[str, str] | None) -> dict[str, str]:
    """QIDO-RS matching parameters (PS3.18 §8.3.4) with LocalArchive's semantics."""
    filters = {}
    for key, value in (query or {}).items():
        if key in IGNORED_PARAMETERS or value in ("", None):
            continue
        value = str(value)
        if key in UID_KEYS or key in LIST_KEYS:
            filters[key] = ",".join(item for item in re.split(r"[,\\]", value) if item)
        elif key in DATE_KEYS or key in NUMBER_KEYS:
            filters[key] = value
        elif key in TEXT_KEYS:
            if key == "PatientName" and "*" not in value and "?" not in value:
                value += "*"  # LocalArchive matches names by their beginning
            filters[key] = _qido_value(value)
        else:
            raise ArchiveError(f"unsupported matching key {key!r}")
    return filters


def _cleaned_result(result: dict) -> dict:
    result = {tag: element for tag, element in result.items() if tag != RETRIEVE_URL}
    modalities = result.get("00080061")
    if modalities and modalities.get("Value"):
        result["00080061"] = {**modalities, "Value": sorted(modalities["Value"])}
    return result


def _instance_number_key(dataset: dict) -> tuple:
    number = dicom.json_value(dataset, "InstanceNumber")
    try:
        return (0, int(number))
    except (TypeError, ValueError):
        return (1, 0)


def _without_bulk_references(dataset: dict) -> dict:
    kept = {}
    for tag, element in dataset.items():
        if tag == PIXEL_DATA or tag.startswith("0002") or "BulkDataURI" in element:
            continue
        if element.get("vr") == "SQ" and element.get("Value"):
            element = {
                **element,
                "Value": [_without_bulk_references(item) for item in element["Value"]],
            }
        kept[tag] = element
    return kept


def _dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 file: after the preamble, the ``DICM`` prefix and the File
    Meta Information group, always Explicit VR Little Endian (PS3.10 §7.1)."""
    if data[128:132] != b"DICM":
        return data
    position = 132
    long_length_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"}
    long_length_vrs |= {b"UR", b"UT", b"UV"}
    while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
        vr = data[position + 4 : position + 6]
        if vr in long_length_vrs:
            length = int.from_bytes(data[position + 8 : position + 12], "little")
            position += 12 + length
        else:
            length = int.from_bytes(data[position + 6 : position + 8], "little")
            position += 8 + length
    return data[position:]


def _compared(sop_uid: str, archived: bytes, data: bytes) -> StoreOutcome:
    if archived == data or _dataset_bytes(archived) == _dataset_bytes(data):
        return StoreOutcome(sop_uid, StoreStatus.DUPLICATE)
    return StoreOutcome(sop_uid, StoreStatus.CONFLICT, CONFLICT_REASON)


def _stow_batches(files: list[tuple[int, str, bytes]]) -> Iterator[list[tuple[int, str, bytes]]]:
    batch: list[tuple[int, str, bytes]] = []
    size = 0
    for item in files:
        if batch and (len(batch) >= STOW_BATCH_FILES or size + len(item[2]) > STOW_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item[2])
    if batch:
        yield batch


def transfer_syntax(content_type: str) -> str | None:
    match = re.search(r"transfer-syntax\s*=\s*\"?([0-9.]+)", content_type, re.IGNORECASE)
    if match:
        return match.group(1)
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/octet-stream":
        return ExplicitVRLittleEndian  # its default transfer syntax (PS3.18 §8.7.3.3.2)
    return None


def _stale_connection(error: requests.ConnectionError) -> bool:
    """Whether ``error`` is an established connection closed under the request (the peer
    hung up or reset it), not a connection that could not be opened (refused, no route,
    unknown host) nor a timeout: only the former is worth retrying at once."""
    cause = error.args[0] if error.args else None
    if isinstance(cause, urllib3.exceptions.ProtocolError):
        return True  # "Connection aborted.": RemoteDisconnected, reset, broken pipe
    reason = getattr(cause, "reason", None)
    return isinstance(reason, urllib3.exceptions.ProtocolError)


def _orthanc_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("Message", ""))[:100] if isinstance(body, dict) else ""


def _multipart_parts(response: requests.Response, action: str) -> list[_Part]:
    return multipart_parts(response.headers.get("Content-Type", ""), response.content, action)


def multipart_parts(content_type: str, body: bytes, action: str) -> list[_Part]:
    """The body parts of a multipart/related answer (RFC 2387; RFC 2046 §5.1.1)."""
    if not content_type.lower().startswith("multipart/"):
        # Some archives answer a single part without the multipart envelope.
        return [_Part({"content-type": content_type}, body)]
    boundary = re.search(r'boundary\s*=\s*"?([^";]+)"?', content_type, re.IGNORECASE)
    if boundary is None:
        raise ArchiveError(f"{action}: multipart answer without a boundary")
    delimiter = b"--" + boundary.group(1).strip().encode("latin-1")
    parts = []
    position = body.find(delimiter)
    while position != -1:
        position += len(delimiter)
        if body[position : position + 2] == b"--":
            return parts  # the close-delimiter
        line_end = body.find(b"\r\n", position)
        end = body.find(b"\r\n" + delimiter, line_end + 2) if line_end != -1 else -1
        if end == -1:
            break
        raw = body[line_end + 2 : end]
        if raw.startswith(b"\r\n"):
            head, content = b"", raw[2:]
        else:
            head, separator, content = raw.partition(b"\r\n\r\n")
            if not separator:
                break
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append(_Part(headers, content))
        position = end + 2
    raise ArchiveError(f"{action}: truncated multipart answer")
