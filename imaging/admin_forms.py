"""The form of an establishment's DICOM declaration on the administration pages."""

import ipaddress

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from imaging.models import DicomDeclaration


def validate_ae_title(value: str) -> str:
    """An Application Entity title (DICOM PS3.5 §6.2, VR AE): at most 16 characters of the
    default repertoire, no backslash nor control character, not only spaces. Returns it
    without its leading and trailing spaces, which are not significant."""
    title = value.strip()
    if not title or len(title) > 16 or "\\" in title or not title.isascii():
        raise ValidationError(
            _("“%(title)s” is not an AE title: 1 to 16 ASCII characters, no backslash."),
            params={"title": value},
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in title):
        raise ValidationError(
            _("“%(title)s” is not an AE title: 1 to 16 ASCII characters, no backslash."),
            params={"title": value},
        )
    return title


class DicomDeclarationForm(forms.ModelForm):
    """The PACS destination, the prefetch settings and the calling AE titles (one a line,
    ``TITLE`` or ``TITLE address`` to accept it from that address only)."""

    calling_ae_titles = forms.CharField(
        label=_("Calling AE titles"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One a line: the AE title, then optionally the only address it may call from."),
    )
    seen = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = DicomDeclaration
        fields = [
            "pacs_ae_title",
            "pacs_host",
            "pacs_port",
            "pacs_tls",
            "prefetch_enabled",
            "prefetch_years",
            "prefetch_max_studies",
            "prefetch_modalities_first",
        ]

    def clean_pacs_ae_title(self):
        value = self.cleaned_data["pacs_ae_title"]
        return validate_ae_title(value) if value.strip() else ""

    def clean_pacs_port(self):
        port = self.cleaned_data["pacs_port"]
        if port is not None and not 1 <= port <= 65535:
            raise ValidationError(_("A port is a number from 1 to 65535."))
        return port

    def clean_calling_ae_titles(self) -> dict[str, str | None]:
        titles: dict[str, str | None] = {}
        for number, line in enumerate(self.cleaned_data["calling_ae_titles"].splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) > 2:
                raise ValidationError(
                    _("Line %(number)s: an AE title and at most one address."),
                    params={"number": number},
                )
            title = validate_ae_title(parts[0])
            address = None
            if len(parts) == 2:
                try:
                    address = str(ipaddress.ip_address(parts[1]))
                except ValueError:
                    raise ValidationError(
                        _("Line %(number)s: “%(address)s” is not an IP address."),
                        params={"number": number, "address": parts[1]},
                    ) from None
            if title in titles:
                raise ValidationError(_("“%(title)s” is listed twice."), params={"title": title})
            titles[title] = address
        return titles

    def clean(self):
        cleaned = super().clean()
        pacs = [cleaned.get(name) for name in ("pacs_ae_title", "pacs_host", "pacs_port")]
        if any(pacs) and not all(pacs):
            raise ValidationError(
                _("The PACS destination needs its AE title, its host and its port, or none.")
            )
        return cleaned
