"""The rendering of a key image, run in an :mod:`imaging.sandbox` child (no Django here).

One frame of a Part 10 file, windowed as the viewer showed it, cropped to the zoomed area,
flipped and rotated as on screen, with its measurements drawn as lines and shapes: a PNG for
the minutes. The annotations arrive in the review protocol's form (docs/review-protocol.md):
points in world coordinates (mm, the patient coordinate system, PS3.3 C.7.6.2.1.1), mapped
to pixels through Image Position (Patient), Image Orientation (Patient) and Pixel Spacing
(PS3.3 C.7.6.2, or the Plane Position, Plane Orientation and Pixel Measures functional
groups of an enhanced multi-frame image, PS3.3 C.7.6.16.2). An image without that geometry
(a radiograph) is rendered with its window only: its annotations cannot be placed.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.pixels import apply_modality_lut, pixel_array

MIN_SIDE = 512  # small images are enlarged so that the drawing stays legible
MAX_SIDE = 1024  # large ones reduced: the minutes need no more
COLOUR = (255, 230, 0)  # the viewer's annotation yellow
OUTLINE = (0, 0, 0)


def _windowed(ds, pixels, window: tuple[float, float]) -> np.ndarray:
    """Modality LUT (PS3.3 C.11.1), then the linear window from ``center - width / 2`` to
    ``center + width / 2``, as Cornerstone's ``toLowHighRange`` applies it in the viewer."""
    center, width = window
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    low, high = center - width / 2, center + width / 2
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


def _functional_group(ds, frame: int, sequence: str):
    """An item of a functional group macro for ``frame``: per-frame first, then shared."""
    for groups, index in (
        (ds.get("PerFrameFunctionalGroupsSequence"), frame - 1),
        (ds.get("SharedFunctionalGroupsSequence"), 0),
    ):
        if groups and len(groups) > index and sequence in groups[index]:
            items = groups[index][sequence].value
            if items:
                return items[0]
    return None


def plane_of(ds, frame: int = 1):
    """(origin, row direction, column direction, row spacing, column spacing) of ``frame``,
    or None when the image has no patient geometry. ``row spacing`` is the distance between
    rows (PixelSpacing[0]), ``column spacing`` between columns (PixelSpacing[1])."""
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing")
    if position is None:
        item = _functional_group(ds, frame, "PlanePositionSequence")
        position = item.get("ImagePositionPatient") if item else None
    if orientation is None:
        item = _functional_group(ds, frame, "PlaneOrientationSequence")
        orientation = item.get("ImageOrientationPatient") if item else None
    if spacing is None:
        item = _functional_group(ds, frame, "PixelMeasuresSequence")
        spacing = item.get("PixelSpacing") if item else None
    try:
        origin = np.array([float(v) for v in position], dtype=np.float64)
        cosines = [float(v) for v in orientation]
        spacings = [float(v) for v in spacing] if spacing else [1.0, 1.0]
    except (TypeError, ValueError):
        return None
    if origin.shape != (3,) or len(cosines) != 6 or len(spacings) != 2 or min(spacings) <= 0:
        return None
    return origin, np.array(cosines[:3]), np.array(cosines[3:]), spacings[0], spacings[1]


def world_to_pixel(point, plane) -> tuple[float, float]:
    """A world point (mm) to (column, row) in pixels, 0 at the centre of the first pixel."""
    origin, row_direction, column_direction, row_spacing, column_spacing = plane
    offset = np.asarray(point, dtype=np.float64) - origin
    return (
        float(offset @ row_direction) / column_spacing,
        float(offset @ column_direction) / row_spacing,
    )


class _Canvas:
    """The displayed image and the mapping of pixel positions of the frame onto it: crop,
    scale, flips, then the rotation of the screen (as Cornerstone's camera does)."""

    def __init__(self, image: Image.Image, view: dict):
        width, height = image.size
        zoom = float(view.get("zoom") or 1)
        box = (0, 0, width, height)
        if zoom > 1.01:
            pan = view.get("pan") or [0, 0]
            shown_w, shown_h = width / zoom, height / zoom
            centre_x = min(max(width / 2 - float(pan[0]), shown_w / 2), width - shown_w / 2)
            centre_y = min(max(height / 2 - float(pan[1]), shown_h / 2), height - shown_h / 2)
            left, top = round(centre_x - shown_w / 2), round(centre_y - shown_h / 2)
            box = (left, top, left + max(1, round(shown_w)), top + max(1, round(shown_h)))
            image = image.crop(box)
        self.box = box
        longest = max(image.size)
        self.scale = min(max(longest, MIN_SIDE), MAX_SIDE) / longest
        if self.scale != 1:
            size = tuple(max(1, round(side * self.scale)) for side in image.size)
            image = image.resize(size, Image.Resampling.BILINEAR)
        self.flip_h = bool(view.get("flipH"))
        self.flip_v = bool(view.get("flipV"))
        self.rotation = int(view.get("rotation") or 0) % 360
        self.shown = image.size  # before the rotation
        if self.flip_h:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.flip_v:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        # Cornerstone's rotation turns the image clockwise on screen.
        turns = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180}
        turns[270] = Image.Transpose.ROTATE_90
        if self.rotation in turns:
            image = image.transpose(turns[self.rotation])
        self.image = image.convert("RGB")

    def place(self, column: float, row: float) -> tuple[float, float]:
        """A pixel position of the frame (centre of the first pixel at 0, 0) on the canvas."""
        width, height = self.shown
        x = (column + 0.5 - self.box[0]) * self.scale
        y = (row + 0.5 - self.box[1]) * self.scale
        if self.flip_h:
            x = width - x
        if self.flip_v:
            y = height - y
        if self.rotation == 90:
            x, y = height - y, x
        elif self.rotation == 180:
            x, y = width - x, height - y
        elif self.rotation == 270:
            x, y = y, width - x
        return x - 0.5, y - 0.5


def _roi_statistics(tool: str, bounds, plane, values, unit: str) -> str:
    """Area (mm2) of a rectangle or ellipse given by its pixel bounds, and the mean ± SD of
    the modality values inside (HU for a CT), as the viewer's ROI tools show them."""
    left, top, right, bottom = bounds
    pixel_area = plane[3] * plane[4]
    semi_c, semi_r = (right - left) / 2, (bottom - top) / 2
    if tool == "RectangleROI":
        area = (right - left) * (bottom - top) * pixel_area
    else:
        area = math.pi * semi_c * semi_r * pixel_area
    text = f"{area:.1f} mm2"
    if values is None or semi_c <= 0 or semi_r <= 0:
        return text
    rows, columns = np.ogrid[: values.shape[0], : values.shape[1]]
    if tool == "RectangleROI":
        mask = (columns >= left) & (columns <= right) & (rows >= top) & (rows <= bottom)
    else:
        centre_c, centre_r = left + semi_c, top + semi_r
        mask = ((columns - centre_c) / semi_c) ** 2 + ((rows - centre_r) / semi_r) ** 2 <= 1
    inside = values[mask]
    if inside.size:
        text += f" · {inside.mean():.0f} ± {inside.std():.0f}{unit}"
    return text


def _draw_annotations(canvas: _Canvas, annotations, plane, values, unit: str) -> int:
    draw = ImageDraw.Draw(canvas.image)
    longest = max(canvas.image.size)
    width = max(2, round(longest / 320))
    font = ImageFont.load_default(size=max(12, round(longest / 40)))

    def text(x, y, label):
        if not label:
            return
        right, bottom = canvas.image.size
        box = draw.textbbox((0, 0), label, font=font, stroke_width=2)
        x = min(max(x + 6, 2), right - (box[2] - box[0]) - 2)
        y = min(max(y - (box[3] - box[1]) - 4, 2), bottom - (box[3] - box[1]) - 2)
        draw.text((x, y), label, fill=COLOUR, font=font, stroke_width=2, stroke_fill=OUTLINE)

    burned = 0
    for annotation in annotations:
        points = [p for p in annotation.get("points") or [] if len(p) == 3]
        pixels = [world_to_pixel(p, plane) for p in points]
        placed = [canvas.place(*p) for p in pixels]
        if not placed or any(abs(v) > 4 * longest for p in placed for v in p):
            continue  # far off the image: nothing to show, and no giant shape to draw
        tool = annotation.get("tool")
        label = str(annotation.get("text") or "")[:200]
        if tool == "Length" and len(placed) >= 2:
            draw.line([placed[0], placed[1]], fill=COLOUR, width=width)
            length = math.dist(points[0], points[1])
            text(*placed[1], label or f"{length:.1f} mm")
        elif tool == "Angle" and len(placed) >= 3:
            draw.line([placed[0], placed[1], placed[2]], fill=COLOUR, width=width, joint="curve")
            a = np.subtract(points[0], points[1])
            b = np.subtract(points[2], points[1])
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            cosine = max(-1.0, min(1.0, float(a @ b) / norms)) if norms else 1.0
            angle = math.degrees(math.acos(cosine))
            text(*placed[1], label or f"{angle:.1f}°")
        elif tool in ("RectangleROI", "EllipticalROI") and len(pixels) >= 4:
            columns = [p[0] for p in pixels]
            rows = [p[1] for p in pixels]
            bounds = (min(columns), min(rows), max(columns), max(rows))
            corners = [canvas.place(*bounds[:2]), canvas.place(*bounds[2:])]
            xs = sorted(p[0] for p in corners)
            ys = sorted(p[1] for p in corners)
            shape = [(xs[0], ys[0]), (xs[1], ys[1])]
            if tool == "RectangleROI":
                draw.rectangle(shape, outline=COLOUR, width=width)
            else:
                draw.ellipse(shape, outline=COLOUR, width=width)
            text(xs[1], ys[0], label or _roi_statistics(tool, bounds, plane, values, unit))
        elif tool == "ArrowAnnotate" and len(placed) >= 2:
            head, tail = placed[0], placed[1]
            draw.line([tail, head], fill=COLOUR, width=width)
            size = max(8, width * 5)
            angle = math.atan2(head[1] - tail[1], head[0] - tail[0])
            wings = [
                (head[0] - size * math.cos(angle - s), head[1] - size * math.sin(angle - s))
                for s in (0.45, -0.45)
            ]
            draw.polygon([head, *wings], fill=COLOUR)
            text(*tail, label)
        else:
            continue
        burned += 1
    return burned


def render_key_image(data: bytes, frame: int, view: dict, annotations: list) -> dict:
    """Renders ``frame`` of a Part 10 file as the viewer showed it. Returns the identity of
    the instance (its UIDs, its number of frames) and, when the frame exists, the PNG and how
    many annotations were drawn (None: the image has no geometry to place them)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    result = {
        "study": str(ds.get("StudyInstanceUID", "")),
        "series": str(ds.get("SeriesInstanceUID", "")),
        "sop": str(ds.get("SOPInstanceUID", "")),
        "frames": frames,
        "png": None,
        "burned": None,
    }
    if "PixelData" not in ds or not 1 <= frame <= frames:
        return result
    # Only the frame shown is decoded; colour comes out as RGB (pydicom converts YBR itself).
    pixels = pixel_array(ds, index=frame - 1) if frames > 1 else ds.pixel_array
    values = None
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        voi = view.get("voi") or {}
        image = Image.fromarray(_windowed(ds, pixels, (voi["wc"], voi["ww"])))
        values = apply_modality_lut(pixels, ds).astype(np.float64)
    else:
        image = Image.fromarray(pixels.astype(np.uint8))
    canvas = _Canvas(image, view)
    plane = plane_of(ds, frame)
    if plane is not None:
        unit = " HU" if ds.get("Modality") == "CT" else ""
        result["burned"] = _draw_annotations(canvas, annotations, plane, values, unit)
    output = io.BytesIO()
    canvas.image.save(output, format="PNG", optimize=True)
    result["png"] = output.getvalue()
    return result
