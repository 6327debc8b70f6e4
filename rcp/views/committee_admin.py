"""Committees set up by the regional administration and run by their chair and coordinators:
creation with a first coordinator found in the national directory, then the members' page
(add from the directory, roles, removal, required specialties). The rules are rcp.committees'."""

from django.contrib import messages
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal import rosters
from portal.audit import Actor
from portal.directory_lookup import lookup_from
from portal.views import patient_data_view
from rcp import committees, selectors
from rcp import permissions as may
from rcp.access import get_committee_to_coordinate
from rcp.errors import RcpError
from rcp.forms import CommitteeCreateForm, MemberRoleForm, RequiredSpecialtiesForm

PAGE = rosters.RosterPage(
    committees.ROSTER, get_committee_to_coordinate, "rcp-committee-members", may.may_coordinate
)


_CREATED = gettext_lazy("Committee “%(name)s” created; %(coordinator)s coordinates it.")


def _create(data, *, coordinator, by):
    fields = {k: v for k, v in data.items() if k not in ("step", "national_id")}
    return committees.committee_create_with_coordinator(coordinator=coordinator, by=by, **fields)


committee_create = rosters.creation_view(
    PAGE,
    CommitteeCreateForm,
    _create,
    may_create=may.may_create_committee,
    created=_CREATED,
)


def _members_page(request, committee, *, specialties_form=None):
    members = list(selectors.committee_members(committee=committee))
    return render(
        request,
        "rcp/committee_members.html",
        {
            "committee": committee,
            "members": members,
            "roles": committees.Role.choices,
            "specialties_form": specialties_form
            or RequiredSpecialtiesForm(
                initial={
                    "specialties": committee.required_specialties,
                    "seen": ",".join(committee.required_specialties),
                }
            ),
            "lookup": lookup_from(request),
        },
    )


@patient_data_view
def committee_members(request, committee_id):
    """The members' page of the committee's chair and coordinators; a POST adds the person
    chosen in the directory lookup as a member."""
    committee = get_committee_to_coordinate(request, committee_id)
    if request.method == "POST":
        return PAGE.add_post(
            request, committee, committees.member_add, _("%(name)s joined the committee.")
        )
    return _members_page(request, committee)


committee_member_role = PAGE.role_view(committees.member_set_role, MemberRoleForm)
committee_member_remove = PAGE.remove_view(
    committees.member_remove, gettext_lazy("%(name)s left the committee.")
)


@patient_data_view
@require_POST
def committee_specialties(request, committee_id):
    committee = get_committee_to_coordinate(request, committee_id)
    form = RequiredSpecialtiesForm(request.POST)
    if form.is_valid():
        try:
            committees.required_specialties_set(
                committee=committee,
                specialties=form.cleaned_data["specialties"],
                seen=form.seen_list(),
                by=Actor.from_request(request),
            )
        except RcpError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, _("The required specialties were saved."))
    else:
        messages.error(request, _("Choose specialties from the list."))
    return PAGE.back(committee)
