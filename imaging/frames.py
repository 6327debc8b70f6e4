"""Image frames for viewers: negotiation of the transfer syntax, decoding, cache, read-ahead.

Frames are served in the syntax the caller accepts (PS3.18 §8.7.3): as stored, or decoded
to Explicit VR Little Endian in the sandbox. Both kinds are cached in the "frames" cache
(Redis in production, shared by every daphne process); the stored syntax of each instance
is cached with them, so a warm request never reaches the archive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.cache import caches

from imaging import dicom
from imaging.archive import ArchiveNotFound, Frames, get_archive
from imaging.grants import frame_key, remember_membership, syntax_key
from imaging.render import decode_frames
from imaging.sandbox import run_limited
from portal import task_queue

EXPLICIT_LE = "1.2.840.10008.1.2.1"
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", EXPLICIT_LE}
# Media types of frames in each compressed transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
# Older names some clients still send.
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
}


@dataclass(frozen=True)
class Acceptable:
    media_type: str
    params: dict


def parse_accept(header: str) -> list[Acceptable]:
    accepted = []
    for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", header or ""):
        pieces = [piece.strip() for piece in part.split(";") if piece.strip()]
        if not pieces:
            continue
        params = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        if "type" in params:
            params["type"] = MEDIA_TYPE_ALIASES.get(params["type"].lower(), params["type"].lower())
        media_type = pieces[0].lower()
        accepted.append(Acceptable(MEDIA_TYPE_ALIASES.get(media_type, media_type), params))
    return accepted or [Acceptable("*/*", {})]


def _frame_media_type(syntax: str) -> str:
    return FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


def _wanted_syntax(accepted: list[Acceptable], stored: str) -> str | None:
    """The transfer syntax to serve frames in, or None if nothing acceptable (406)."""
    for wanted in accepted:
        inner = wanted.params.get("type", "")
        syntax = wanted.params.get("transfer-syntax", "")
        if wanted.media_type == "*/*" or (
            wanted.media_type == "multipart/related" and inner in ("", "*/*")
        ):
            return syntax if syntax and syntax != "*" else stored
        if wanted.media_type != "multipart/related":
            continue
        if syntax == "*" or (syntax == stored and inner == _frame_media_type(stored)):
            return stored
        if inner == "application/octet-stream" and syntax in ("", EXPLICIT_LE, "1.2.840.10008.1.2"):
            return EXPLICIT_LE
        if inner == _frame_media_type(stored) and syntax in ("", stored):
            return stored
    return None


def frames_for(study_uid, series_uid, sop_uid, numbers: list[int], accepted) -> tuple[str, list]:
    """Frames in a transfer syntax the caller accepts, decoding when needed (cached)."""
    cache = caches["frames"]
    archive = get_archive()
    # The stored syntax is cached with the frames: a warm request never asks the archive.
    stored = cache.get(syntax_key(study_uid, series_uid, sop_uid))
    if stored is not None:
        target = _wanted_syntax(accepted, stored)
        if target is None:
            return "", []
        keys = [frame_key(study_uid, series_uid, sop_uid, n, target) for n in numbers]
        hits = cache.get_many(keys)
        if len(hits) == len(keys):
            return target, [hits[key] for key in keys]
    try:
        native = archive.retrieve_frames(study_uid, series_uid, sop_uid, numbers)
    except ArchiveNotFound:
        native = _unaligned_bit_frames(study_uid, series_uid, sop_uid, numbers)
    read_ahead(study_uid, [series_uid])
    stored = native.transfer_syntax_uid
    cache.set(syntax_key(study_uid, series_uid, sop_uid), stored, timeout=None)
    target = _wanted_syntax(accepted, stored)
    if target is None:
        return "", []
    if target == stored or (stored in NATIVE_SYNTAXES and target == EXPLICIT_LE):
        frames = native.frames
    elif target == EXPLICIT_LE:
        data = archive.retrieve_instance(study_uid, series_uid, sop_uid)
        _description, frames = run_limited(decode_frames, data, numbers, timeout=60)
    else:
        return "", []  # transcoding into a compressed syntax is not offered
    cache.set_many(
        {
            frame_key(study_uid, series_uid, sop_uid, n, target): f
            for n, f in zip(numbers, frames, strict=True)
        }
    )
    return target, frames


def _unaligned_bit_frames(study_uid, series_uid, sop_uid, numbers: list[int]) -> Frames:
    """Frames of 1-bit native pixel data whose frames do not start on a byte (PS3.5
    §8.1.1: a 10x10 mask frame is 100 bits), each bit-packed from a byte boundary as a
    frame of its own (PS3.18 §8.7.3.3.2).

    Neither archive cuts such frames (they are not a run of whole bytes in the stored
    value, and Orthanc answers "Bad file format"): they are decoded from the instance.
    Anything else the archive did not find stays not found.
    """
    archive = get_archive()
    data = archive.retrieve_instance(study_uid, series_uid, sop_uid)
    ds = dicom.read_header(data)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if (
        int(ds.get("BitsAllocated", 0) or 0) != 1
        or syntax not in NATIVE_SYNTAXES
        or not all(1 <= number <= count for number in numbers)
    ):
        raise ArchiveNotFound(f"frames {numbers} of instance {sop_uid}")
    _description, frames = run_limited(decode_frames, data, numbers, timeout=60)
    return Frames(syntax, frames)


def read_ahead(study_uid: str, series_uids: list[str]) -> None:
    """Have the rest of these series of a granted study fetched in the background, once per
    series and READ_AHEAD_SECONDS: when a study is opened (its series searched, its metadata
    read) and on a first miss in a series. Never waits for the fetching.

    On the event loop of the fast path when this process has one (Redis and a DICOMweb
    archive, under daphne: imaging.fast_frames), else by a Celery worker.
    """
    from imaging.fast_frames import schedule_read_ahead

    if schedule_read_ahead(study_uid, series_uids):
        return
    for series_uid in series_uids:
        _read_ahead(study_uid, series_uid)


def read_ahead_key(study_uid: str, series_uid: str) -> str:
    return f"read-ahead:{study_uid}:{series_uid}"


def _read_ahead(study_uid: str, series_uid: str) -> None:
    """Have a worker fetch the rest of a series (once per series)."""
    if task_queue.runs_inline():
        return  # no worker: reading ahead inline would only delay this answer
    if caches["default"].add(read_ahead_key(study_uid, series_uid), 1, timeout=READ_AHEAD_SECONDS):
        task_queue.enqueue("imaging.warm_series_frames", study_uid, series_uid)


READ_AHEAD_SECONDS = 600


def warm_series(study_uid: str, series_uid: str) -> int:
    """Read ahead: put every frame of a series, as stored, in the cache; returns how many.

    A viewer asks for a whole series, one frame at a time, right after its first image:
    fetching the rest in the background makes the following requests warm.
    """
    cache = caches["frames"]
    archive = get_archive()
    warmed = 0
    for attributes in archive.search_instances(study_uid, series_uid):
        sop_uid = dicom.json_value(attributes, "SOPInstanceUID")
        count = int(dicom.json_value(attributes, "NumberOfFrames", 1) or 1)
        numbers = list(range(1, count + 1))
        # The archive listed this instance under this series of this study: its index says
        # so, which is what the fast path needs before answering it.
        remember_membership(study_uid, series_uid, sop_uid)
        stored = cache.get(syntax_key(study_uid, series_uid, sop_uid))
        if stored:
            served = _served_as(stored)
            keys = [frame_key(study_uid, series_uid, sop_uid, n, served) for n in numbers]
            if len(cache.get_many(keys)) == count:
                continue
        try:
            native = archive.retrieve_frames(study_uid, series_uid, sop_uid, numbers)
        except ArchiveNotFound:
            continue  # deleted meanwhile, or 1-bit frames off byte boundaries: asked alone
        cache.set(syntax_key(study_uid, series_uid, sop_uid), native.transfer_syntax_uid, None)
        served = _served_as(native.transfer_syntax_uid)
        cache.set_many(
            {
                frame_key(study_uid, series_uid, sop_uid, n, served): frame
                for n, frame in zip(numbers, native.frames, strict=True)
            }
        )
        warmed += count
    return warmed


def _served_as(stored: str) -> str:
    """Native frames are served as Explicit VR Little Endian byte for byte."""
    return EXPLICIT_LE if stored in NATIVE_SYNTAXES else stored
