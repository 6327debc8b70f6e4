"""Checks of uploaded documents and photos, shared by the RCP and tele-expertise.

A file's type is read from its first bytes, never from its name or the browser's claim.
"""

DOCUMENT_TYPES = {
    "application/pdf": b"%PDF-",
    "image/jpeg": b"\xff\xd8\xff",
    "image/png": b"\x89PNG",
}
PHOTO_TYPES = {key: DOCUMENT_TYPES[key] for key in ("image/jpeg", "image/png")}
DOCUMENT_MAX_BYTES = 20 * 1024 * 1024


def sniff_content_type(upload, *, allowed: dict[str, bytes] = DOCUMENT_TYPES) -> str | None:
    head = upload.read(8)
    upload.seek(0)
    return next((name for name, magic in allowed.items() if head.startswith(magic)), None)
