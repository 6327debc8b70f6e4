"""Committees set up by the regional administration and run by their chair and coordinators:
creation with a first coordinator found in the national directory, then the members' page
(add from the directory, roles, removal, required specialties). The rules are rcp.committees'."""

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.access import child_or_not_found
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory, active_person
from portal.directory_lookup import chosen_professional, lookup_from
from portal.indicators import refuse
from portal.models import AuditPurpose
from portal.views import patient_data_view
from rcp import committees, selectors
from rcp import permissions as may
from rcp.access import get_committee_to_coordinate
from rcp.errors import RcpError
from rcp.forms import CommitteeCreateForm, MemberRoleForm, RequiredSpecialtiesForm


def _not_in_directory(request) -> None:
    messages.error(
        request,
        _(
            "This national identifier is not that of an active professional of the directory: "
            "nobody was added."
        ),
    )


@patient_data_view
def committee_create(request):
    """The regional administration's form: first the coordinator, found in the directory,
    then the committee."""
    if not may.may_create_committee(user=request.user):
        refuse(request, purpose=AuditPurpose.ADMINISTRATION, reason="may not create committees")
    form = person = None
    if request.method == "POST":
        creating = request.POST.get("step") == "create"
        form = CommitteeCreateForm(request.POST if creating else None)
        national_id = request.POST.get("national_id", "")
        try:
            person = active_person(national_id)
        except NotInDirectory:
            _not_in_directory(request)
            return redirect("rcp-committee-create")
        form.initial["national_id"] = person.national_id
        if creating and form.is_valid():
            data = form.cleaned_data
            by = Actor.from_request(request)
            try:
                # The coordinator's account (made if needed) and the committee go together: a
                # refused committee leaves no account behind.
                with transaction.atomic():
                    committee = committees.committee_create_with_coordinator(
                        coordinator=(coordinator := chosen_professional(request, by=by)),
                        by=by,
                        **{k: v for k, v in data.items() if k not in ("step", "national_id")},
                    )
            except (RcpError, NotInDirectory) as error:
                form.add_error(None, str(error))
            else:
                messages.success(
                    request,
                    _("Committee “%(name)s” created; %(coordinator)s coordinates it.")
                    % {"name": committee.name, "coordinator": coordinator.display_name},
                )
                # The regional administration is not a member: its page is the coordinators'.
                if may.may_coordinate(user=request.user, committee=committee):
                    return redirect("rcp-committee-members", committee_id=committee.pk)
                return redirect("rcp-home")
    return render(
        request,
        "rcp/committee_create.html",
        {"form": form, "person": person, "lookup": lookup_from(request) if form is None else None},
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
        by = Actor.from_request(request)
        try:
            with transaction.atomic():  # a refused member leaves no account behind
                member = committees.member_add(
                    committee=committee, professional=chosen_professional(request, by=by), by=by
                )
        except NotInDirectory:
            _not_in_directory(request)
        except RcpError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request, _("%(name)s joined the committee.") % {"name": member.professional}
            )
        return redirect("rcp-committee-members", committee_id=committee.pk)
    return _members_page(request, committee)


def _member(request, committee, member_id):
    return child_or_not_found(
        request,
        committee.memberships.select_related("professional__user"),
        member_id,
        object_type="rcp.committeemember",
    )


@patient_data_view
@require_POST
def committee_member_role(request, committee_id, member_id):
    committee = get_committee_to_coordinate(request, committee_id)
    member = _member(request, committee, member_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose one of the roles offered."))
    else:
        try:
            member = committees.member_set_role(
                committee=committee,
                member=member,
                role=form.cleaned_data["role"],
                seen_role=form.cleaned_data["seen_role"],
                by=Actor.from_request(request),
            )
        except RcpError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("%(name)s is now %(role)s.")
                % {"name": member.professional, "role": member.get_role_display().lower()},
            )
    return redirect("rcp-committee-members", committee_id=committee.pk)


@patient_data_view
@require_POST
def committee_member_remove(request, committee_id, member_id):
    committee = get_committee_to_coordinate(request, committee_id)
    member = _member(request, committee, member_id)
    try:
        committees.member_remove(
            committee=committee,
            member=member,
            seen_role=request.POST.get("seen_role") or None,
            by=Actor.from_request(request),
        )
    except RcpError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("%(name)s left the committee.") % {"name": member.professional})
    return redirect("rcp-committee-members", committee_id=committee.pk)


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
    return redirect("rcp-committee-members", committee_id=committee.pk)
