"""The directory lookup shared by the administration pages (establishments, committees, pools):
search the national directory by name or RPPS, then act on the person chosen.

A page builds a :class:`Lookup` from its GET parameters and includes
``portal/directory/_lookup.html``; the chosen person comes back in a POST as ``national_id``,
which :func:`chosen_professional` turns into the portal's Professional (an account is made
for a person who has none yet, portal.directory_accounts), audited as the actor's doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django import forms
from django.utils.translation import gettext_lazy as _

from portal import directory_accounts
from portal.audit import Actor
from portal.models import Professional

RESULTS = 20


class DirectoryLookupForm(forms.Form):
    q = forms.CharField(
        label=_("Name or RPPS"),
        min_length=2,
        max_length=100,
        required=False,
        widget=forms.TextInput(attrs={"type": "search", "autocomplete": "off"}),
    )


@dataclass
class Lookup:
    form: DirectoryLookupForm
    persons: list = field(default_factory=list)
    searched: bool = False
    # GET parameters the search form keeps (a page's other filters) and fields its POST adds.
    keep: list[tuple[str, str]] = field(default_factory=list)
    extra_post: list[tuple[str, str]] = field(default_factory=list)


def lookup_from(request, *, extra_post=(), keep=()) -> Lookup:
    """The lookup of a page: the persons matching ``?q=`` (one query with their sites)."""
    form = DirectoryLookupForm(request.GET or None)
    persons: list = []
    searched = False
    if form.is_bound and form.is_valid() and form.cleaned_data["q"]:
        searched = True
        persons = list(directory_accounts.search(form.cleaned_data["q"], limit=RESULTS))
    return Lookup(form, persons, searched, list(keep), list(extra_post))


def chosen_professional(request, *, by: Actor) -> Professional:
    """The professional of the person chosen in the lookup (POST ``national_id``), linked from
    the directory (created with an account if needed). Raises NotInDirectory for an unknown or
    inactive identifier, which the page shows as a message: nothing is created then."""
    national_id = (request.POST.get("national_id") or "").strip()[:20]
    person = directory_accounts.active_person(national_id)
    return directory_accounts.link_professional(person, by=by).professional
