"""Key images of a case: marked from the viewer (JSON), listed and removed on the case and
live pages (the include ``rcp/_key_images.html``, refreshed with htmx), shown full size.

Thin views over rcp.key_images, through rcp.access (outsiders get 404).
"""

from django.contrib import messages
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from portal.access import child_or_not_found
from portal.audit import Actor
from portal.views import patient_data_view
from rcp import key_images
from rcp import permissions as may
from rcp.access import get_case_for_user
from rcp.models import Case, KeyImage
from rcp.views.common import audit_read, back


def viewer_key_images(request, case: Case) -> dict | None:
    """What the viewer needs to show its "Key image" button (``keyImages`` in its config),
    or None when this user cannot add key images to this case now."""
    if not key_images.key_images_editable(case) or not may.may_add_key_image(
        case=case, user=request.user
    ):
        return None
    return {
        "url": reverse("rcp-case-key-image-add", args=[case.pk]),
        "csrf": get_token(request),
    }


def _get_key_image(request, case: Case, key_image_id) -> KeyImage:
    return child_or_not_found(
        request, case.key_images, key_image_id, object_type="rcp.keyimage", patient=case.patient
    )


def _block(request, case: Case, *, error: str = ""):
    """The key images block, as the include renders it."""
    next_url = reverse("rcp-case", args=[case.pk])
    if request.htmx and request.htmx.current_url_abs_path:
        next_url = request.htmx.current_url_abs_path
    return render(
        request,
        "rcp/_key_images.html",
        {
            "case": case,
            "key_images": key_images.key_images_of(case=case, user=request.user),
            "key_images_loaded": True,
            "key_images_error": error,
            "key_images_next": next_url,
        },
    )


@patient_data_view
@require_POST
def key_image_add(request, case_id):
    """Marks the image the viewer shows (a JSON body, see rcp.key_images.parse_request)."""
    case = get_case_for_user(request, case_id)
    if request.content_type != "application/json":
        return JsonResponse({"error": _("Send the key image as JSON.")}, status=400)
    try:
        # A body announced too large is refused before it is read.
        key_images.check_request_size(int(request.META.get("CONTENT_LENGTH") or 0))
        payload = key_images.parse_request(request.body)
        image = key_images.key_image_add(case=case, by=Actor.from_request(request), **payload)
    except (ValueError, RequestDataTooBig):
        return JsonResponse({"error": str(key_images.TOO_LARGE)}, status=400)
    except key_images.KeyImageError as error:
        return JsonResponse({"error": str(error)}, status=error.status)
    return JsonResponse(
        {
            "id": image.pk,
            "url": reverse("rcp-case-key-image", args=[case.pk, image.pk]),
            "annotationsDrawn": image.annotations_drawn,
            "message": _("Key image added to the case."),
        },
        status=201,
    )


@patient_data_view
@require_GET
def key_image_list(request, case_id):
    """The key images block of the case (thumbnails and remove buttons), for htmx."""
    case = get_case_for_user(request, case_id)
    audit_read(request, case, patient=case.patient, view="key images")
    return _block(request, case)


@patient_data_view
@require_GET
def key_image_show(request, case_id, key_image_id):
    """The rendering of one key image, full size."""
    case = get_case_for_user(request, case_id)
    image = _get_key_image(request, case, key_image_id)
    if not image.rendering:
        raise Http404
    try:
        with image.rendering.open("rb") as stream:
            data = stream.read()
    except OSError:
        raise Http404 from None
    audit_read(request, case, patient=case.patient, view="key image", key_image=image.pk)
    response = HttpResponse(data, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="key-image-{image.pk}.png"'
    return response


@patient_data_view
@require_POST
def key_image_remove(request, case_id, key_image_id):
    case = get_case_for_user(request, case_id)
    image = _get_key_image(request, case, key_image_id)
    error = ""
    try:
        key_images.key_image_remove(key_image=image, by=Actor.from_request(request))
    except key_images.KeyImageError as refusal:
        error = str(refusal)
    if request.htmx:
        return _block(request, case, error=error)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, _("Key image removed."))
    return back(request, reverse("rcp-case", args=[case.pk]))
