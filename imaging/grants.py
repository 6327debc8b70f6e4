"""The grant contract between the DICOMweb view and the fast frame path.

Two code paths answer images: the Django view (:mod:`imaging.dicomweb`), which checks access,
audits and fetches from the archive, and the fast path (:mod:`imaging.fast_frames`), which
answers warm frames from Redis before Django. They must agree on every name and rule, or
one of them serves what the other would refuse. So this module owns, for both:

* the cache keys of every cached image object. Each carries the study, the series and the
  instance: a grant is made on a study, and an object cached under one study's path is never
  found under another's (an instance UID alone would let a caller of study A read study B's
  pixels by putting B's instance under A's path);
* the membership mark: "this instance belongs to this series of this study", written only
  after the archive's index said so. Both paths need it before answering an instance;
* the credential hash (viewer token or session) and the fast grant record;
* the frame-list rules (no duplicate, at most ``max_frames()``) and the byte cap of an answer;
* the multipart framing of frames (PS3.18 §8.7.3.5).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence

from django.conf import settings
from django.core.cache import caches

FAST_GRANT_SECONDS = 60
# How long "this instance is in this series of this study" is remembered. UIDs are unique
# and an instance never moves between studies; an identity correction moves the whole study
# to another patient, which the study grant (not this mark) follows.
MEMBERSHIP_SECONDS = 24 * 3600


# --- Credentials and fast grants ----------------------------------------------------------------


def credential_hash(*, token: str = "", session_key: str = "") -> str:
    """A token's hash is the one stored in ViewerToken.token_hash; sessions get their own."""
    if token:
        return hashlib.sha256(token.encode()).hexdigest()
    return hashlib.sha256(f"session:{session_key}".encode()).hexdigest()


def fast_grant_key(credential: str, study_uid: str) -> str:
    return f"dicomweb-fastgrant:{credential}:{study_uid}"


def remember_fast_grant(
    *,
    credential: str,
    study_uid: str,
    user_id: int,
    generation: int,
    audit_key: str,
    expires_at: float,
) -> None:
    """Called by the Django view after it checked and audited an access to a study's frames.

    The record is (user id, access generation, audit dedupe key, credential expiry): the
    fast path answers only while the generation is unchanged and the audit window is open.
    """
    lifetime = min(FAST_GRANT_SECONDS, int(expires_at - time.time()) - 1)
    if lifetime > 0:
        caches["default"].set(
            fast_grant_key(credential, study_uid),
            (user_id, generation, audit_key, expires_at),
            timeout=lifetime,
        )


# --- Keys of cached image objects (the "frames" cache) ----------------------------------------


def _instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{study_uid}:{series_uid}:{sop_uid}"


def member_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"member:{_instance_path(study_uid, series_uid, sop_uid)}"


def syntax_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"syntax:{_instance_path(study_uid, series_uid, sop_uid)}"


def fetching_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Marks an instance a process is reading ahead from the archive (for the others)."""
    return f"fetching:{_instance_path(study_uid, series_uid, sop_uid)}"


def frame_key(study_uid: str, series_uid: str, sop_uid: str, number: int, syntax: str) -> str:
    return f"frame:{_instance_path(study_uid, series_uid, sop_uid)}:{number}:{syntax}"


def rendered_key(
    study_uid: str, series_uid: str, sop_uid: str, *, frame: int, size, window_key, image_format
) -> str:
    return (
        f"rendered:{_instance_path(study_uid, series_uid, sop_uid)}:{frame}:"
        f"{size or 'full'}:{window_key}:{image_format}"
    )


def remember_membership(study_uid: str, series_uid: str, sop_uid: str) -> None:
    """Only after the archive's index placed the instance in this series of this study."""
    caches["frames"].set(member_key(study_uid, series_uid, sop_uid), 1, MEMBERSHIP_SECONDS)


def remember_memberships(members: list[tuple[str, str, str]]) -> None:
    """As remember_membership, for the (study, series, instance) of an archive's answer."""
    if members:
        caches["frames"].set_many(
            {member_key(*member): 1 for member in members}, timeout=MEMBERSHIP_SECONDS
        )


def membership_known(study_uid: str, series_uid: str, sop_uid: str) -> bool:
    return caches["frames"].get(member_key(study_uid, series_uid, sop_uid)) is not None


# --- Limits of one frames request ---------------------------------------------------------------


class FrameListError(ValueError):
    """A frame list refused before any work: ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def max_frames() -> int:
    return settings.DICOMWEB_MAX_FRAMES_PER_REQUEST


def max_answer_bytes() -> int:
    return settings.DICOMWEB_MAX_ANSWER_BYTES


def parse_frame_list(text: str) -> list[int]:
    """Frame numbers of a WADO-RS frame list (PS3.18 §8.4.1.3: "1,3,5"), in request order.

    A frame asked twice is refused, not answered twice: a 1 KB URL repeating one frame
    would otherwise make the server build an answer of hundreds of megabytes.
    """
    pieces = text.split(",")
    if len(pieces) > max_frames():
        raise FrameListError(
            413, f"at most {max_frames()} frames in one request: ask for the rest separately"
        )
    try:
        numbers = [int(piece) for piece in pieces]
    except ValueError:
        raise FrameListError(400, "frame numbers are integers separated by commas") from None
    if min(numbers) < 1:
        raise FrameListError(400, "frame numbers start at 1")
    if len(set(numbers)) != len(numbers):
        raise FrameListError(400, "each frame may be asked for once in a request")
    return numbers


def too_large_message() -> str:
    return (
        f"the answer would exceed {max_answer_bytes() // 1024**2} MB: "
        "ask for fewer frames at a time"
    )


# --- Multipart framing of frames -----------------------------------------------------------------


def frames_content_type(media_type: str, syntax: str, boundary: str) -> str:
    return f'multipart/related; type="{media_type}"; boundary={boundary}; transfer-syntax={syntax}'


def frame_parts(
    frames: Sequence[bytes], *, media_type: str, syntax: str, boundary: str
) -> Iterator[bytes]:
    """The body of a frames answer, piece by piece: the frames are never joined in memory."""
    head = f"--{boundary}\r\nContent-Type: {media_type}; transfer-syntax={syntax}\r\n"
    for frame in frames:
        yield f"{head}Content-Length: {len(frame)}\r\n\r\n".encode()
        yield frame
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
