"""The portal's form fields name their help text and errors to screen readers.

Django gives each input ``aria-describedby`` pointing at ``<id>_helptext`` (and ``<id>_error``
when the field has errors): the include that renders the fields must give those ids to the
help text and the error list, or the screen reader reads the field without them.
"""

import re

from django import forms
from django.template.loader import render_to_string


class _DateForm(forms.Form):
    date = forms.DateField(label="Date", help_text="Format JJ/MM/AAAA.")
    note = forms.CharField(label="Note", required=False)


def _ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def _described_by(html: str, name: str) -> list[str]:
    [tag] = re.findall(rf'<input\b[^>]*\bname="{name}"[^>]*>', html)
    match = re.search(r'aria-describedby="([^"]+)"', tag)
    return match.group(1).split() if match else []


def test_the_help_text_is_the_one_its_input_is_described_by():
    html = render_to_string("includes/form_fields.html", {"form": _DateForm()})
    described_by = _described_by(html, "date")
    assert described_by == ["id_date_helptext"]
    assert set(described_by) <= _ids(html)
    assert re.search(r'<small class="help" id="id_date_helptext">Format JJ/MM/AAAA.</small>', html)
    assert _described_by(html, "note") == []  # no help text, nothing to point at


def test_the_errors_are_the_ones_their_input_is_described_by_too():
    form = _DateForm({"date": "demain"})
    assert not form.is_valid()
    html = render_to_string("includes/form_fields.html", {"form": form})
    described_by = _described_by(html, "date")
    assert "id_date_error" in described_by
    assert set(described_by) <= _ids(html)
