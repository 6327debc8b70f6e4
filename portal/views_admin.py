"""The scoped administration pages (/administration/…): establishments and their professionals,
the roles. Thin: each parses its form, calls portal.administration, and shows what it answered;
who sees what is portal.permissions', asked again by every action."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from portal import administration, permissions, roles
from portal.access import (
    child_or_not_found,
    get_establishment_for_administrator,
    not_found,
    record_refusal,
)
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory
from portal.directory_lookup import chosen_professional, lookup_from
from portal.forms import EstablishmentForm, RoleChoiceForm, RoleGrantByEmailForm
from portal.models import Affiliation, AuditPurpose, Establishment, Professional, User


def administration_page(predicate):
    """Signed-in users for whom ``predicate(user)`` holds, never cached; the others get 403,
    audited (the pages that take no object id: the menu's page, the lists)."""

    def decorator(view):
        @wraps(view)
        @login_required
        @never_cache
        def wrapper(request, *args, **kwargs):
            if not predicate(request.user):
                record_refusal(
                    actor=Actor.from_request(request),
                    object_type="view",
                    object_id=request.path,
                    purpose=AuditPurpose.ADMINISTRATION,
                    reason=f"not entitled: {predicate.__name__}",
                )
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def signed_in_page(view):
    return login_required(never_cache(view))


def _errors(error: ValidationError) -> str:
    return " ".join(error.messages)


@administration_page(permissions.may_open_administration)
def administration_home(request):
    establishments = permissions.administered_establishments(request.user).order_by("name")
    return render(
        request,
        "portal/admin/home.html",
        {
            "establishments": establishments,
            "regional": permissions.may_manage_establishments(request.user),
        },
    )


# --- Establishments (regional administrator) --------------------------------------------------


@administration_page(permissions.may_manage_establishments)
@require_http_methods(["GET", "POST"])
def establishment_create(request):
    form = EstablishmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            establishment = administration.establishment_create(
                by=Actor.from_request(request), fields=form.cleaned_data
            )
        except ValidationError as error:
            messages.error(request, _errors(error))
        else:
            messages.success(
                request, _("Establishment %(name)s created.") % {"name": establishment.name}
            )
            return redirect("administration-establishment", establishment_id=establishment.pk)
    return render(request, "portal/admin/establishment_form.html", {"form": form})


@signed_in_page
@require_http_methods(["GET", "POST"])
def establishment_edit(request, establishment_id):
    establishment = get_establishment_for_administrator(request, establishment_id, regional=True)
    seen = administration.establishment_fingerprint(establishment)
    form = EstablishmentForm(request.POST or None, instance=establishment, initial={"seen": seen})
    if request.method == "POST" and form.is_valid():
        try:
            changed = administration.establishment_update(
                establishment=Establishment.objects.get(pk=establishment.pk),
                by=Actor.from_request(request),
                fields=form.cleaned_data,
                seen=form.cleaned_data["seen"],
            )
        except ValidationError as error:
            messages.error(request, _errors(error))
            if error.code == "stale":
                # Show what is there now, with its own fingerprint: the next save applies.
                current = Establishment.objects.get(pk=establishment.pk)
                form = EstablishmentForm(
                    instance=current,
                    initial={"seen": administration.establishment_fingerprint(current)},
                )
        else:
            if changed:
                messages.success(request, _("The establishment was saved."))
            else:
                messages.info(request, _("Nothing was changed."))
            return redirect("administration-establishment", establishment_id=establishment.pk)
    return render(
        request,
        "portal/admin/establishment_form.html",
        {"form": form, "establishment": establishment},
    )


# --- An establishment's professionals ---------------------------------------------------------


def _scoped_roles() -> list[roles.Role]:
    return [role for role in roles.registry().values() if role.establishment_scoped]


@signed_in_page
@require_http_methods(["GET", "POST"])
def establishment_professionals(request, establishment_id):
    establishment = get_establishment_for_administrator(request, establishment_id)
    if request.method == "POST":
        try:
            affiliation = administration.affiliation_add_from_directory(
                establishment=establishment,
                national_id=(request.POST.get("national_id") or "").strip()[:20],
                by=Actor.from_request(request),
            )
        except NotInDirectory:
            messages.error(
                request,
                _("No active professional of the national directory has this identifier."),
            )
        except ValidationError as error:
            messages.error(request, _errors(error))
        else:
            messages.success(
                request,
                _("%(name)s now works for %(establishment)s.")
                % {
                    "name": affiliation.professional.display_name,
                    "establishment": establishment.name,
                },
            )
        return redirect("administration-professionals", establishment_id=establishment.pk)
    scoped = _scoped_roles()
    affiliations = list(
        Affiliation.objects.filter(establishment=establishment)
        .select_related("professional__user")
        .prefetch_related(Prefetch("professional__user__groups"))
        .order_by("professional__user__last_name", "professional__user__first_name")
    )
    rows = []
    for affiliation in affiliations:
        held = {group.name for group in affiliation.professional.user.groups.all()}
        rows.append(
            {
                "affiliation": affiliation,
                "roles": [(role, role.group_name in held) for role in scoped],
            }
        )
    return render(
        request,
        "portal/admin/professionals.html",
        {
            "establishment": establishment,
            "rows": rows,
            "lookup": lookup_from(request),
            "regional": permissions.may_manage_establishments(request.user),
        },
    )


@signed_in_page
@require_POST
def affiliation_end(request, establishment_id, affiliation_id):
    establishment = get_establishment_for_administrator(request, establishment_id)
    affiliation = child_or_not_found(
        request,
        Affiliation.objects.filter(establishment=establishment).select_related(
            "professional__user", "establishment"
        ),
        affiliation_id,
        object_type="portal.affiliation",
    )
    try:
        administration.affiliation_end(affiliation=affiliation, by=Actor.from_request(request))
    except ValidationError as error:
        messages.error(request, _errors(error))
    else:
        messages.success(
            request,
            _("%(name)s no longer works for %(establishment)s.")
            % {"name": affiliation.professional.display_name, "establishment": establishment.name},
        )
    return redirect("administration-professionals", establishment_id=establishment.pk)


@signed_in_page
@require_POST
def establishment_role_change(request, establishment_id, professional_id):
    """Grant or revoke an establishment-scoped role to one of the establishment's professionals."""
    establishment = get_establishment_for_administrator(request, establishment_id)
    professional = child_or_not_found(
        request,
        Professional.objects.filter(affiliations__establishment=establishment).select_related(
            "user"
        ),
        professional_id,
        object_type="portal.professional",
    )
    form = RoleChoiceForm(
        request.POST, choices=[(role.code, role.label) for role in _scoped_roles()]
    )
    if not form.is_valid():
        messages.error(request, _("Choose a role from the list."))
        return redirect("administration-professionals", establishment_id=establishment.pk)
    change = (
        administration.role_revoke
        if request.POST.get("operation") == "revoke"
        else administration.role_grant
    )
    _change_role(request, change, form.cleaned_data["role"], professional.user)
    return redirect("administration-professionals", establishment_id=establishment.pk)


def _change_role(request, change, role_code: str, holder: User) -> None:
    try:
        role = change(role_code=role_code, holder=holder, by=Actor.from_request(request))
    except ValidationError as error:
        messages.error(request, _errors(error))
    except PermissionDenied:
        messages.error(request, _("You may not change this role for this person."))
    else:
        name = holder.get_full_name() or holder.email
        if change is administration.role_grant:
            message = _("%(name)s now holds the role “%(role)s”.")
        else:
            message = _("%(name)s no longer holds the role “%(role)s”.")
        messages.success(request, message % {"name": name, "role": role.label})


# --- Roles (regional administrator) -----------------------------------------------------------


@administration_page(permissions.may_manage_establishments)
@require_http_methods(["GET", "POST"])
def role_list(request):
    choices = [(role.code, role.label) for role in roles.registry().values()]
    if request.method == "POST":
        _grant_from_post(request, choices)
        return redirect("administration-roles")
    chosen = request.GET.get("role") if request.GET.get("role") in dict(choices) else ""
    groups = {
        group.name: group
        for group in roles.role_groups_with_holders(
            [role.group_name for role in roles.registry().values()]
        )
    }
    return render(
        request,
        "portal/admin/roles.html",
        {
            "roles": [
                (role, groups[role.group_name].user_set.all() if role.group_name in groups else [])
                for role in roles.registry().values()
            ],
            "role_form": RoleChoiceForm(initial={"role": chosen}, choices=choices),
            "email_form": RoleGrantByEmailForm(initial={"role": chosen}, choices=choices),
            "chosen": chosen,
            "chosen_label": dict(choices).get(chosen, ""),
            "lookup": lookup_from(request, keep=[("role", chosen)], extra_post=[("role", chosen)]),
        },
    )


def _grant_from_post(request, choices) -> None:
    by = Actor.from_request(request)
    if request.POST.get("national_id"):
        form = RoleChoiceForm(request.POST, choices=choices)
        if not form.is_valid():
            messages.error(request, _("Choose a role from the list."))
            return
        try:
            holder = chosen_professional(request, by=by).user
        except NotInDirectory:
            messages.error(
                request,
                _("No active professional of the national directory has this identifier."),
            )
            return
    else:
        form = RoleGrantByEmailForm(request.POST, choices=choices)
        if not form.is_valid():
            messages.error(request, _("Choose a role and give a valid e-mail address."))
            return
        holder = User.objects.filter(email__iexact=form.cleaned_data["email"]).first()
        if holder is None:
            messages.error(request, _("No account has this e-mail address."))
            return
    _change_role(request, administration.role_grant, form.cleaned_data["role"], holder)


@signed_in_page
@require_POST
def role_revoke(request, role_code, user_id):
    if not permissions.may_manage_establishments(request.user):
        raise not_found(
            request,
            object_type="portal.user",
            object_id=user_id,
            purpose=AuditPurpose.ADMINISTRATION,
        )
    try:
        role = roles.get_role(role_code)
    except roles.UnknownRole:
        role = None
    # A holder who lost the role meanwhile is told so by the service, not 404.
    holder = User.objects.filter(pk=user_id).first() if role else None
    if holder is None:
        raise not_found(
            request,
            object_type="portal.user",
            object_id=user_id,
            purpose=AuditPurpose.ADMINISTRATION,
        )
    _change_role(request, administration.role_revoke, role.code, holder)
    return redirect("administration-roles")
