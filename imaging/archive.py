"""Where the regional images live: the embedded local archive or a DICOMweb archive.

The imaging issue grows this module into the full archive interface; the foundation only
needs to tell whether the configured archive answers.
"""

import os
import urllib.error
import urllib.request

from django.conf import settings


def archive_health() -> str:
    """ "ok", or a short reason the configured archive cannot be used."""
    if settings.ARCHIVE_URL:
        url = settings.ARCHIVE_URL.rstrip("/") + "/studies?limit=1"
        request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=settings.ARCHIVE_TIMEOUT) as response:  # noqa: S310
                return "ok" if response.status in (200, 204) else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            return f"unreachable: {getattr(error, 'reason', error)}"
    root = settings.ARCHIVE_ROOT
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        return f"local archive unavailable: {error.strerror}"
    if not os.access(root, os.W_OK):
        return "local archive not writable"
    return "ok"
