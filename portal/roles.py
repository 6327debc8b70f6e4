"""The roles of the portal: named sets of global permissions, granted from the administration
pages (portal.administration.role_grant / role_revoke) instead of hand-made groups.

Each role is one Django group with a stable name (``role:<code>``), whose permissions are kept in
sync with this registry whenever the role is granted (:func:`role_group`) and by
:func:`sync_role_groups` (the demo, a deployment after a release).

The portal declares its own roles below. An app adds roles, or permissions to a role of the
portal's, without the portal importing it, through two methods of its AppConfig:

``portal_roles(self) -> dict[str, list[str]]``
    role code -> permissions as ``"app_label.codename"``. A code of the portal's (e.g.
    ``"regional_admin"``) adds the permissions to that role; a new code (``"programme"``) makes
    a new role.
``portal_role_details(self) -> dict[str, dict]`` (optional, for new codes)
    role code -> ``{"label": <translatable>, "establishment_scoped": bool}``; without it the
    role is shown by its code and is regional.

An *establishment-scoped* role is one whose permissions act only where the holder is
affiliated (the establishment's administration, a billing office): an establishment's
administrator may grant it to the professionals of their establishment. The other roles act on
the whole region and only a regional administrator grants them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db.models import Prefetch, Q
from django.utils.translation import gettext_lazy as _

from portal.models import User

GROUP_PREFIX = "role:"

REGIONAL_ADMIN = "regional_admin"
ESTABLISHMENT_ADMIN = "establishment_admin"
DATA_PROTECTION = "data_protection"
IDENTITY_VIGILANCE = "identity_vigilance"


@dataclass(frozen=True)
class Role:
    code: str
    label: object
    establishment_scoped: bool = False
    permissions: tuple[str, ...] = field(default=())

    @property
    def group_name(self) -> str:
        return GROUP_PREFIX + self.code


# The portal's own roles. The permissions say what each may do; the predicates of
# portal.permissions say where (an establishment's administration: its affiliations).
PORTAL_ROLES = (
    Role(
        REGIONAL_ADMIN,
        _("Regional administrator"),
        permissions=("portal.add_establishment", "portal.change_establishment"),
    ),
    Role(
        ESTABLISHMENT_ADMIN,
        _("Establishment administrator"),
        establishment_scoped=True,
        permissions=("portal.change_carerelationship",),
    ),
    Role(DATA_PROTECTION, _("Data protection officer"), permissions=("portal.view_auditevent",)),
    Role(
        IDENTITY_VIGILANCE,
        _("Identity vigilance"),
        permissions=("portal.change_identityconflict",),
    ),
)


class UnknownRole(LookupError):
    pass


@cache
def registry() -> dict[str, Role]:
    """Every role, the portal's and the apps', by code (built once per process)."""
    roles = {role.code: role for role in PORTAL_ROLES}
    added: dict[str, list[str]] = {}
    details: dict[str, dict] = {}
    for config in apps.get_app_configs():
        for code, labels in getattr(config, "portal_roles", dict)().items():
            added.setdefault(code, []).extend(labels)
        for code, info in getattr(config, "portal_role_details", dict)().items():
            details.setdefault(code, info)
    for code, labels in added.items():
        base = roles.get(code) or Role(
            code,
            details.get(code, {}).get("label", code),
            establishment_scoped=bool(details.get(code, {}).get("establishment_scoped")),
        )
        roles[code] = Role(
            base.code,
            base.label,
            base.establishment_scoped,
            tuple(dict.fromkeys((*base.permissions, *labels))),
        )
    return roles


def get_role(code: str) -> Role:
    try:
        return registry()[code]
    except KeyError:
        raise UnknownRole(code) from None


def role_of_group(name: str) -> Role | None:
    if not name.startswith(GROUP_PREFIX):
        return None
    return registry().get(name[len(GROUP_PREFIX) :])


def _permission_rows(labels) -> list[Permission]:
    condition = Q(pk__in=[])
    for label in labels:
        app_label, _dot, codename = label.partition(".")
        condition |= Q(content_type__app_label=app_label, codename=codename)
    rows = list(Permission.objects.filter(condition))
    if len(rows) != len(set(labels)):
        found = {f"{p.content_type.app_label}.{p.codename}" for p in rows}
        raise LookupError(f"unknown permissions in the roles registry: {set(labels) - found}")
    return rows


def role_group(role: Role) -> Group:
    """The group of ``role``, created if needed, holding exactly the registry's permissions."""
    group, _created = Group.objects.get_or_create(name=role.group_name)
    group.permissions.set(_permission_rows(role.permissions))
    return group


def sync_role_groups() -> None:
    """Every role's group, in step with the registry (after a release changed it)."""
    for role in registry().values():
        role_group(role)


def role_codes_of(user) -> frozenset[str]:
    """The codes of the roles ``user`` holds (one query, remembered on the user object for
    the request: a page asks several predicates)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_portal_role_codes", None)
    if cached is None:
        names = user.groups.filter(name__startswith=GROUP_PREFIX).values_list("name", flat=True)
        cached = frozenset(name[len(GROUP_PREFIX) :] for name in names)
        user._portal_role_codes = cached
    return cached


def forget_roles_of(user) -> None:
    user.__dict__.pop("_portal_role_codes", None)
    # Django caches the permissions a user holds through groups on the object too.
    user.__dict__.pop("_perm_cache", None)
    user.__dict__.pop("_group_perm_cache", None)


def role_groups_with_holders(group_names):
    """The roles' groups with their holders (and their professional), in two queries."""
    return Group.objects.filter(name__in=group_names).prefetch_related(
        Prefetch(
            "user_set",
            queryset=User.objects.select_related("professional").order_by(
                "last_name", "first_name"
            ),
        )
    )
