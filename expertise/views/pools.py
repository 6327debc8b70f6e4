"""Pools set up by the regional administration and run by their coordinators: creation with a
first coordinator found in the national directory, then the pool's management page (experts
added from the directory, roles, removal, accepting requests, delays). Rules: expertise.pools."""

from django.contrib import messages
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from expertise import permissions as may
from expertise import pools, selectors
from expertise.access import get_pool_to_coordinate
from expertise.errors import ExpertiseError
from expertise.forms import PoolCreateForm, PoolMemberRoleForm, PoolSettingsForm
from portal import rosters
from portal.audit import Actor
from portal.directory_lookup import lookup_from
from portal.views import patient_data_view

PAGE = rosters.RosterPage(
    pools.ROSTER, get_pool_to_coordinate, "expertise-pool-manage", may.may_manage_pool
)


_CREATED = gettext_lazy("Pool “%(name)s” created; %(coordinator)s coordinates it.")


def _create(data, *, coordinator, by):
    return pools.pool_create(
        name=data["name"],
        specialty=data["specialty"],
        establishment=data["establishment"],
        coordinator=coordinator,
        by=by,
    )


pool_create = rosters.creation_view(
    PAGE,
    PoolCreateForm,
    _create,
    may_create=may.may_create_pool,
    created=_CREATED,
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
        return PAGE.add_post(
            request, pool, pools.member_add, _("%(name)s joined the pool as %(role)s."), role=role
        )
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


pool_member_role = PAGE.role_view(pools.member_set_role, PoolMemberRoleForm)
pool_member_remove = PAGE.remove_view(pools.member_remove, gettext_lazy("%(name)s left the pool."))


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
        return PAGE.back(pool)
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
    return PAGE.back(pool)
