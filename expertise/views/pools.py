"""Pools set up by the regional administration and run by their coordinators: creation with a
first coordinator found in the national directory, then the pool's management page (experts
added from the directory, roles, removal, accepting requests, delays). Rules: expertise.pools."""

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from expertise import permissions as may
from expertise import pools, selectors
from expertise.access import get_pool_to_coordinate
from expertise.errors import ExpertiseError
from expertise.forms import PoolCreateForm, PoolMemberRoleForm, PoolSettingsForm
from portal.access import child_or_not_found
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory, active_person
from portal.directory_lookup import chosen_professional, lookup_from
from portal.indicators import refuse
from portal.models import AuditPurpose
from portal.views import patient_data_view


def _not_in_directory(request) -> None:
    messages.error(
        request,
        _(
            "This national identifier is not that of an active professional of the directory: "
            "nobody was added."
        ),
    )


@patient_data_view
def pool_create(request):
    """The regional administration's form: first the coordinator, found in the directory,
    then the pool."""
    if not may.may_create_pool(user=request.user):
        refuse(request, purpose=AuditPurpose.ADMINISTRATION, reason="may not create pools")
    form = person = None
    if request.method == "POST":
        creating = request.POST.get("step") == "create"
        form = PoolCreateForm(request.POST if creating else None)
        try:
            person = active_person(request.POST.get("national_id", ""))
        except NotInDirectory:
            _not_in_directory(request)
            return redirect("expertise-pool-create")
        form.initial["national_id"] = person.national_id
        if creating and form.is_valid():
            data = form.cleaned_data
            by = Actor.from_request(request)
            try:
                # The coordinator's account (made if needed) and the pool go together: a refused
                # pool leaves no account behind.
                with transaction.atomic():
                    pool = pools.pool_create(
                        name=data["name"],
                        specialty=data["specialty"],
                        establishment=data["establishment"],
                        coordinator=(coordinator := chosen_professional(request, by=by)),
                        by=by,
                    )
            except (ExpertiseError, NotInDirectory) as error:
                form.add_error(None, str(error))
            else:
                messages.success(
                    request,
                    _("Pool “%(name)s” created; %(coordinator)s coordinates it.")
                    % {"name": pool.name, "coordinator": coordinator.display_name},
                )
                # The regional administration is not a member: its page is the coordinators'.
                if may.may_manage_pool(pool=pool, user=request.user):
                    return redirect("expertise-pool-manage", pool_id=pool.pk)
                return redirect("expertise-home")
    return render(
        request,
        "expertise/pool_create.html",
        {"form": form, "person": person, "lookup": lookup_from(request) if form is None else None},
    )


def _adding_role(request) -> str:
    role = request.GET.get("role") or request.POST.get("role") or pools.Role.EXPERT
    return role if role in pools.Role.values else pools.Role.EXPERT


@patient_data_view
def pool_manage(request, pool_id):
    """The pool's management page, its coordinators' only; a POST adds the person chosen in the
    directory lookup (as an expert, or as a coordinator when the page was switched to that)."""
    pool = get_pool_to_coordinate(request, pool_id)
    role = _adding_role(request)
    if request.method == "POST":
        by = Actor.from_request(request)
        try:
            with transaction.atomic():  # a refused member leaves no account behind
                member = pools.member_add(
                    pool=pool, professional=chosen_professional(request, by=by), role=role, by=by
                )
        except NotInDirectory:
            _not_in_directory(request)
        except ExpertiseError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("%(name)s joined the pool as %(role)s.")
                % {"name": member.professional, "role": member.get_role_display().lower()},
            )
        return redirect("expertise-pool-manage", pool_id=pool.pk)
    return render(
        request,
        "expertise/pool_manage.html",
        {
            "pool": pool,
            "members": list(selectors.pool_members(pool=pool)),
            "roles": pools.Role.choices,
            "adding_role": role,
            "settings_form": PoolSettingsForm.for_pool(pool),
            "lookup": lookup_from(request, keep=[("role", role)], extra_post=[("role", role)]),
        },
    )


def _member(request, pool, member_id):
    return child_or_not_found(
        request,
        pool.memberships.select_related("professional__user"),
        member_id,
        object_type="expertise.poolmember",
    )


@patient_data_view
@require_POST
def pool_member_role(request, pool_id, member_id):
    pool = get_pool_to_coordinate(request, pool_id)
    member = _member(request, pool, member_id)
    form = PoolMemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose one of the roles offered."))
        return redirect("expertise-pool-manage", pool_id=pool.pk)
    try:
        member = pools.member_set_role(
            pool=pool,
            member=member,
            role=form.cleaned_data["role"],
            seen_role=form.cleaned_data["seen_role"],
            by=Actor.from_request(request),
        )
    except ExpertiseError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            _("%(name)s is now %(role)s.")
            % {"name": member.professional, "role": member.get_role_display().lower()},
        )
    return redirect("expertise-pool-manage", pool_id=pool.pk)


@patient_data_view
@require_POST
def pool_member_remove(request, pool_id, member_id):
    pool = get_pool_to_coordinate(request, pool_id)
    member = _member(request, pool, member_id)
    try:
        pools.member_remove(
            pool=pool,
            member=member,
            seen_role=request.POST.get("seen_role") or None,
            by=Actor.from_request(request),
        )
    except ExpertiseError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("%(name)s left the pool.") % {"name": member.professional})
    return redirect("expertise-pool-manage", pool_id=pool.pk)


@patient_data_view
@require_POST
def pool_settings(request, pool_id):
    pool = get_pool_to_coordinate(request, pool_id)
    form = PoolSettingsForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            _(
                "The delays are whole numbers: 1 to 72 hours for an urgent request, 1 to 30 days "
                "otherwise."
            ),
        )
        return redirect("expertise-pool-manage", pool_id=pool.pk)
    try:
        pools.pool_settings_update(
            pool=pool,
            revision=form.cleaned_data["revision"],
            is_active=form.cleaned_data["is_active"],
            by=Actor.from_request(request),
            **form.delays(),
        )
    except ExpertiseError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, _("The pool's settings were saved: new requests get the new delays.")
        )
    return redirect("expertise-pool-manage", pool_id=pool.pk)
