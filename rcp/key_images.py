"""Key images of an RCP case: an image of viewport 1 marked in the viewer, with its window,
its view and its measurements, kept as a reference and a PNG for the minutes (rcp/pdf.py).

The request is the viewer's view in the review protocol's form (docs/review-protocol.md,
validated with the schemas of ``imaging/review_schema.py``) plus the instance and frame it
shows. The image is checked against the case (a study attached to it and visible to the
user) and the archive (the instance must be in that study and series), and rendered
server-side in the decoding sandbox (:mod:`imaging.sandbox`): a 512×512 CT frame takes a few
tens of milliseconds, so the rendering is inline, within the request, under the sandbox's
time and memory limits.
"""

from __future__ import annotations

import base64
import io
import json
import uuid

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from imaging.archive import ArchiveError, ArchiveNotFound, ArchiveUnavailable, get_archive
from imaging.review_schema import ANNOTATION, VIEW
from imaging.sandbox import DecodeError, run_limited
from imaging.selectors import studies_visible_to
from portal.audit import Actor
from rcp import permissions as may
from rcp.key_image_render import render_key_image
from rcp.models import Case, KeyImage
from rcp.services import audit_case

MAX_REQUEST_BYTES = 32 * 1024
MAX_ANNOTATIONS = 50  # on one image; a room holds at most 200 in all
MAX_KEY_IMAGES = 30  # per case: the minutes show them all
RENDER_TIMEOUT = 30
THUMBNAIL_SIZE = 240

_UID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": 64}

REQUEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["study", "series", "sop", "frame", "view"],
    "properties": {
        "study": _UID,
        "series": _UID,
        "sop": _UID,
        "frame": {"type": "integer", "minimum": 1, "maximum": 100000},
        "view": VIEW,
        "annotations": {"type": "array", "maxItems": MAX_ANNOTATIONS, "items": ANNOTATION},
        "caption": {"type": "string", "maxLength": 200},
    },
}
_VALIDATOR = Draft202012Validator(REQUEST_SCHEMA)


class KeyImageError(Exception):
    """A key image request the rules refuse; the message is for the user, ``status`` the
    HTTP status the endpoint answers with."""

    status = 400


class KeyImageInvalid(KeyImageError):
    status = 400


class KeyImageForbidden(KeyImageError):
    status = 403


class KeyImageLocked(KeyImageError):
    status = 409


class KeyImageUnrenderable(KeyImageError):
    status = 422


class ArchiveDown(KeyImageError):
    status = 503


# --- Rules -------------------------------------------------------------------------------------


def key_images_editable(case: Case) -> bool:
    """Key images are added and removed until the decision is validated."""
    return case.state != Case.State.VALIDATED


# --- The request -------------------------------------------------------------------------------


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")


TOO_LARGE = gettext_lazy("The request is too large (at most 32 KiB).")


def check_request_size(size: int) -> None:
    if size > MAX_REQUEST_BYTES:
        raise KeyImageInvalid(TOO_LARGE)


def _schema_problem(error) -> str:
    """What is wrong with a value, without echoing a long one."""
    if error.validator == "pattern":
        return _("not in the expected format")
    if error.validator == "maxLength":
        return _("longer than %(limit)d characters") % {"limit": error.validator_value}
    return error.message[:160]


def parse_request(body: bytes) -> dict:
    """The JSON body of an add request, validated; raises KeyImageInvalid with a message
    saying what is wrong."""
    check_request_size(len(body))
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError):
        raise KeyImageInvalid(_("The request is not valid JSON.")) from None
    if not isinstance(payload, dict):
        raise KeyImageInvalid(_("The request must be a JSON object."))
    error = best_match(_VALIDATOR.iter_errors(payload))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or _("the request")
        raise KeyImageInvalid(
            _("Invalid key image (%(where)s): %(problem)s")
            % {"where": where, "problem": _schema_problem(error)}
        )
    view = payload["view"]
    if (view["study"], view["series"]) != (payload["study"], payload["series"]):
        raise KeyImageInvalid(_("The view shows another series than the image marked."))
    image = (payload["study"], payload["series"], payload["sop"], payload["frame"])
    for annotation in payload.get("annotations", []):
        of = (annotation["study"], annotation["series"], annotation["sop"])
        if (*of, annotation.get("frame", 1)) != image:
            raise KeyImageInvalid(_("A measurement belongs to another image than the one marked."))
    return payload


# --- Rendering ---------------------------------------------------------------------------------


def render(*, study_uid: str, series_uid: str, sop_uid: str, frame: int, view: dict, annotations):
    """The PNG of the frame as the viewer showed it, and how many annotations it shows
    (None when the image has no geometry to place them on). Raises KeyImageError."""
    try:
        data = get_archive().retrieve_instance(study_uid, series_uid, sop_uid)
    except ArchiveNotFound:
        raise KeyImageInvalid(_("This image is not in the series of the study.")) from None
    except (ArchiveUnavailable, ArchiveError):
        raise ArchiveDown(
            _("The image archive is unavailable for now: try again shortly.")
        ) from None
    try:
        result = run_limited(
            render_key_image, data, frame, view, annotations, timeout=RENDER_TIMEOUT
        )
    except DecodeError:
        raise KeyImageUnrenderable(_("This image could not be decoded to be rendered.")) from None
    if (result["study"], result["series"], result["sop"]) != (study_uid, series_uid, sop_uid):
        raise KeyImageInvalid(_("This image is not in the series of the study."))
    if result["png"] is None:
        raise KeyImageInvalid(
            _("Frame %(frame)d does not exist: the image has %(frames)d.")
            % {"frame": frame, "frames": result["frames"]}
        )
    return result["png"], result["burned"]


# --- Services ----------------------------------------------------------------------------------


def _audit(*, by: Actor, case: Case, **detail) -> None:
    audit_case(case, by, detail)


def _check_editable(case: Case) -> None:
    if not key_images_editable(case):
        raise KeyImageLocked(_("The decision is validated: the key images can no longer change."))


def key_image_add(
    *,
    case: Case,
    by: Actor,
    study: str,
    series: str,
    sop: str,
    frame: int,
    view: dict,
    annotations: list | None = None,
    caption: str = "",
) -> KeyImage:
    """Marks an image of a study attached to the case as a key image, rendered now."""
    annotations = annotations or []
    if not may.may_add_key_image(case=case, user=by.user):
        raise KeyImageForbidden(
            _("Only the committee's members and the submitting doctor mark key images.")
        )
    _check_editable(case)
    attached = case.studies.filter(
        study_instance_uid=study, pk__in=studies_visible_to(by.user).values("pk")
    ).exists()
    if not attached:
        raise KeyImageInvalid(_("This study is not attached to the case."))
    if case.key_images.count() >= MAX_KEY_IMAGES:
        raise KeyImageInvalid(
            _("The case already has %(count)d key images: remove one first.")
            % {"count": MAX_KEY_IMAGES}
        )
    view_state = {
        "v": 1,
        "view": {key: value for key, value in view.items() if key != "pointer"},
        "annotations": annotations,
    }
    png, burned = render(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        frame=frame,
        view=view,
        annotations=annotations,
    )
    with transaction.atomic():
        # The validation of the decision may have happened while the image was rendered.
        case = Case.objects.select_for_update().select_related("patient").get(pk=case.pk)
        _check_editable(case)
        image = KeyImage(
            case=case,
            study_uid=study,
            series_uid=series,
            sop_uid=sop,
            frame=frame,
            view_state=view_state,
            caption=caption.strip()[:200],
            created_by=by.user,
        )
        image.rendering.save(f"{uuid.uuid4().hex}.png", ContentFile(png), save=False)
        name = image.rendering.name
        try:
            image.save()
            _audit(
                by=by,
                case=case,
                key_image=image.pk,
                op="add",
                sop=sop,
                frame=frame,
                annotations=len(annotations),
                annotations_drawn=burned,
            )
        except Exception:
            image.rendering.storage.delete(name)
            raise
    image.annotations_drawn = burned
    return image


def key_image_remove(*, key_image: KeyImage, by: Actor) -> None:
    """Removes a key image (its author, or the committee's chair or a coordinator) while the
    decision is not validated; its rendering is deleted once that is committed."""
    with transaction.atomic():
        case = Case.objects.select_for_update().select_related("patient").get(pk=key_image.case_id)
        if not may.may_remove_key_image(key_image=key_image, case=case, user=by.user):
            raise KeyImageForbidden(
                _("Only its author or the committee's coordinator removes a key image.")
            )
        _check_editable(case)
        name = key_image.rendering.name
        storage = key_image.rendering.storage
        pk = key_image.pk
        key_image.delete()
        _audit(by=by, case=case, key_image=pk, op="remove", sop=key_image.sop_uid)
        if name:
            transaction.on_commit(lambda: storage.delete(name))


# --- Reads -------------------------------------------------------------------------------------


def key_images_of(*, case: Case, user) -> list[KeyImage]:
    """The case's key images, oldest first, each with ``thumbnail_uri`` (a data: URI: one
    audited request shows them all) and ``can_remove`` for ``user``."""
    images = list(
        case.key_images.select_related("created_by__professional").order_by("created_at", "pk")
    )
    editable = key_images_editable(case)
    coordinating = may.may_coordinate(committee=case.committee, user=user)
    for image in images:
        image.thumbnail_uri = _thumbnail_uri(image)
        image.can_remove = editable and may.may_remove_key_image(
            key_image=image, case=case, user=user, coordinating=coordinating
        )
    return images


def _thumbnail_uri(image: KeyImage) -> str:
    """Our own PNG, reduced: made here, it needs no sandbox."""
    from PIL import Image

    if not image.rendering:
        return ""
    try:
        with image.rendering.open("rb") as stream, Image.open(stream) as picture:
            picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            output = io.BytesIO()
            picture.save(output, format="PNG")
    except (OSError, ValueError):
        return ""
    return "data:image/png;base64," + base64.b64encode(output.getvalue()).decode()
