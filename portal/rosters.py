"""A group run by its own coordinators (an RCP committee, a tele-expertise pool): its members,
found in the national directory, their roles, and the rule that someone always runs it.

One capability, shared by the apps that need it (house rule, issue 14): an app declares its
:class:`Roster` (which models, which roles run the group, which error to raise, the messages
that name its kind of group) and keeps only what is its own (a committee's unique chair, a
pool's specialty). The steps here are the same for every roster:

* each change locks the group's row: two coordinators acting at once are served one after the
  other;
* a change made on a page built on a role that has changed since (``seen_role``) is refused
  as stale, nothing written;
* the last member with a running role can be neither removed nor given a plain role;
* each change is audited (SECURITY_ALERT, purpose ADMINISTRATION) in its transaction.

The pages' side is at the end of this module: the creation form, the POST adding a member, the
role-change and removal views, and the members' table ``portal/rosters/_members.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db import IntegrityError, models, transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal import audit
from portal.access import child_or_not_found
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory, active_person
from portal.directory_lookup import chosen_professional, lookup_from
from portal.indicators import refuse
from portal.models import AuditPurpose
from portal.views import patient_data_view


@dataclass(frozen=True)
class Roster:
    """What differs between two rosters; the behaviour is this module's."""

    group_model: type[models.Model]
    member_model: type[models.Model]
    # The member model's foreign key to the group ("committee", "pool").
    group_field: str
    # The roles of those who run the group: one of them at least always stays.
    running_roles: tuple[str, ...]
    error: type[Exception]
    stale_error: type[Exception]
    # The messages naming the kind of group; ``%(name)s`` is the professional.
    already_member: str
    stale: str
    last_runner_demoted: str
    last_runner_removed: str

    @property
    def roles(self) -> list[str]:
        return list(self.member_model.Role.values)

    def members(self, group) -> models.QuerySet:
        return self.member_model.objects.filter(**{self.group_field: group})


def audit_change(by: Actor, obj, action, event_type, **detail) -> None:
    """An administration change of a group (its members, its settings), audited."""
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=event_type,
        action=action,
        obj=obj,
        purpose=AuditPurpose.ADMINISTRATION,
        detail=detail,
    )


def audit_created(by: Actor, group, **detail) -> None:
    """A new group (and its first coordinator, in ``detail``), audited."""
    audit_change(
        by,
        group,
        audit.AuditAction.CREATE,
        audit.AuditEventType.SOFTWARE_CONFIGURATION,
        **{group._meta.model_name: "created"},
        **detail,
    )


def audit_settings(by: Actor, group, **detail) -> None:
    """A change of the group's own settings (not of its members), audited."""
    audit_change(
        by, group, audit.AuditAction.UPDATE, audit.AuditEventType.SOFTWARE_CONFIGURATION, **detail
    )


def lock(roster: Roster, group):
    """The group's row, locked until the end of the transaction: its membership changes are
    made one at a time."""
    return roster.group_model.objects.select_for_update().get(pk=group.pk)


def check_role(roster: Roster, role: str) -> None:
    if role not in roster.roles:
        raise roster.error(_("Unknown role."))


def current_member(roster: Roster, group, member, seen_role: str | None):
    """The member's row as it is now (the group being locked); the roster's stale error if
    they left or their role changed since the page showed ``seen_role``."""
    current = (
        roster.members(group).select_related("professional__user").filter(pk=member.pk).first()
    )
    if current is None or (seen_role is not None and current.role != seen_role):
        raise roster.stale_error(roster.stale)
    return current


def is_last_runner(roster: Roster, group, member) -> bool:
    """Whether ``member`` is the only one left to run the group."""
    return (
        member.role in roster.running_roles
        and not roster.members(group)
        .filter(role__in=roster.running_roles)
        .exclude(pk=member.pk)
        .exists()
    )


def _refuse_last_runner(roster: Roster, group, member, message: str) -> None:
    if is_last_runner(roster, group, member):
        raise roster.error(message % {"name": member.professional})


def _audit_member(by: Actor, group, action, **detail) -> None:
    audit_change(by, group, action, audit.AuditEventType.SECURITY_ROLES_CHANGED, **detail)


def add(
    roster: Roster,
    group,
    professional,
    role: str,
    *,
    by: Actor,
    check: Callable[[models.QuerySet], None] | None = None,
):
    """``professional`` joins the group as ``role``; ``check(memberships)`` refuses what the
    app's own rules refuse (the group being locked)."""
    check_role(roster, role)
    with transaction.atomic():
        lock(roster, group)
        memberships = roster.members(group)
        if memberships.filter(professional=professional).exists():
            raise roster.error(roster.already_member % {"name": professional})
        if check is not None:
            check(memberships)
        member = roster.member_model.objects.create(
            **{roster.group_field: group}, professional=professional, role=role
        )
        _audit_member(
            by,
            group,
            audit.AuditAction.CREATE,
            member="added",
            professional=professional.pk,
            role=role,
        )
    return member


def set_role(
    roster: Roster,
    group,
    member,
    role: str,
    *,
    by: Actor,
    seen_role: str | None = None,
    check: Callable[[Any], None] | None = None,
    before_save: Callable[[Any], dict] | None = None,
):
    """Give ``member`` ``role``. ``check(current)`` refuses what the app's rules refuse;
    ``before_save(current)`` makes the app's accompanying changes and returns what the audit
    adds about them. The last runner cannot be given a plain role."""
    check_role(roster, role)
    with transaction.atomic():
        lock(roster, group)
        current = current_member(roster, group, member, seen_role)
        if current.role == role:
            return current
        if check is not None:
            check(current)
        if role not in roster.running_roles:
            _refuse_last_runner(roster, group, current, roster.last_runner_demoted)
        extra = before_save(current) if before_save is not None else {}
        before = current.role
        current.role = role
        try:
            current.save(update_fields=["role"])
        except IntegrityError:  # pragma: no cover - the lock serialises the changes
            raise roster.stale_error(roster.stale) from None
        _audit_member(
            by,
            group,
            audit.AuditAction.UPDATE,
            member="role",
            professional=current.professional_id,
            role=f"{before} -> {role}",
            **extra,
        )
    return current


def remove(roster: Roster, group, member, *, by: Actor, seen_role: str | None = None) -> None:
    """``member`` leaves the group; never its last runner."""
    with transaction.atomic():
        lock(roster, group)
        current = current_member(roster, group, member, seen_role)
        _refuse_last_runner(roster, group, current, roster.last_runner_removed)
        current.delete()
        _audit_member(
            by,
            group,
            audit.AuditAction.DELETE,
            member="removed",
            professional=current.professional_id,
            role=current.role,
        )


# --- The pages' side -----------------------------------------------------------------------------


def not_in_directory(request) -> None:
    messages.error(
        request,
        _(
            "This national identifier is not that of an active professional of the directory: "
            "nobody was added."
        ),
    )


@dataclass(frozen=True)
class RosterPage:
    """How a roster's pages reach its group and members and come back to the members' page.
    The URLs name the group's id ``<group_field>_id`` and the member's ``member_id``."""

    roster: Roster
    # The app's access helper: (request, group id) -> the group its coordinators run, a 404
    # like a missing id for anyone else.
    get_group: Callable
    # The URL name of the members' page.
    page: str
    # The app's predicate: whether ``user`` runs the group (``may_run(user=, <group_field>=)``).
    may_run: Callable

    @property
    def group_kwarg(self) -> str:
        return f"{self.roster.group_field}_id"

    def back(self, group) -> HttpResponse:
        return redirect(self.page, **{self.group_kwarg: group.pk})

    def member(self, request, group, member_id):
        """The group's member ``member_id``; anything else is a 404 like a missing id."""
        return child_or_not_found(
            request,
            group.memberships.select_related("professional__user"),
            member_id,
            object_type=self.roster.member_model._meta.label_lower,
        )

    def _call(self, step: Callable, group, **arguments):
        """The app's service ``step`` on ``group`` (its permission checked again there)."""
        return step(**{self.roster.group_field: group}, **arguments)

    def add_post(self, request, group, add_step: Callable, joined: str, **extra) -> HttpResponse:
        """The POST adding the person chosen in the directory lookup with ``add_step`` (given
        ``extra``); ``joined`` the message (``%(name)s``, ``%(role)s``)."""
        by = Actor.from_request(request)
        try:
            with transaction.atomic():  # a refused member leaves no account behind
                professional = chosen_professional(request, by=by)
                member = self._call(add_step, group, professional=professional, by=by, **extra)
        except NotInDirectory:
            not_in_directory(request)
        except self.roster.error as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                joined % {"name": member.professional, "role": member.get_role_display().lower()},
            )
        return self.back(group)

    def role_view(self, set_role_step: Callable, role_form: type):
        """The view of the role-change POST, made with the app's service ``set_role_step`` and
        its form (``role``, and the ``seen_role`` the page showed)."""

        @patient_data_view
        @require_POST
        def view(request, member_id, **group_id):
            group = self.get_group(request, group_id[self.group_kwarg])
            member = self.member(request, group, member_id)
            form = role_form(request.POST)
            if not form.is_valid():
                messages.error(request, _("Choose one of the roles offered."))
                return self.back(group)
            try:
                member = self._call(
                    set_role_step,
                    group,
                    member=member,
                    role=form.cleaned_data["role"],
                    seen_role=form.cleaned_data["seen_role"],
                    by=Actor.from_request(request),
                )
            except self.roster.error as error:
                messages.error(request, str(error))
            else:
                messages.success(
                    request,
                    _("%(name)s is now %(role)s.")
                    % {"name": member.professional, "role": member.get_role_display().lower()},
                )
            return self.back(group)

        return view

    def remove_view(self, remove_step: Callable, left: str):
        """The view of the removal POST, made with the app's service ``remove_step``; ``left``
        the message (``%(name)s``)."""

        @patient_data_view
        @require_POST
        def view(request, member_id, **group_id):
            group = self.get_group(request, group_id[self.group_kwarg])
            member = self.member(request, group, member_id)
            try:
                self._call(
                    remove_step,
                    group,
                    member=member,
                    seen_role=request.POST.get("seen_role") or None,
                    by=Actor.from_request(request),
                )
            except self.roster.error as error:
                messages.error(request, str(error))
            else:
                messages.success(request, left % {"name": member.professional})
            return self.back(group)

        return view


def creation_view(
    members: RosterPage, form_class: type, create: Callable, *, may_create: Callable, created: str
):
    """The view of the regional administration's two-step form creating a group: first its
    coordinator, found in the directory, then the group. ``may_create(user=)`` is the app's
    predicate (else 403, audited); ``create(form data, coordinator=, by=)`` its service;
    ``created`` the message (``%(name)s`` the group, ``%(coordinator)s``). As Django's generic
    views do, the template is ``<app>/<group model>_create.html``, and the app's home, where the
    regional administration lands when it does not run the group, the URL ``<app>-home``."""
    meta = members.roster.group_model._meta

    @patient_data_view
    def view(request):
        if not may_create(user=request.user):
            reason = f"may not create {meta.model_name}s"
            refuse(request, purpose=AuditPurpose.ADMINISTRATION, reason=reason)
        form = person = None
        if request.method == "POST":
            creating = request.POST.get("step") == "create"
            form = form_class(request.POST if creating else None)
            try:
                person = active_person(request.POST.get("national_id", ""))
            except NotInDirectory:
                not_in_directory(request)
                return redirect(request.path)
            form.initial["national_id"] = person.national_id
            if creating and form.is_valid():
                by = Actor.from_request(request)
                try:
                    # The coordinator's account (made if needed) and the group go together: a
                    # refused group leaves no account behind.
                    with transaction.atomic():
                        coordinator = chosen_professional(request, by=by)
                        group = create(form.cleaned_data, coordinator=coordinator, by=by)
                except (members.roster.error, NotInDirectory) as error:
                    form.add_error(None, str(error))
                else:
                    messages.success(
                        request,
                        created % {"name": group.name, "coordinator": coordinator.display_name},
                    )
                    # The regional administration is not a member: its page is the
                    # coordinators'.
                    if members.may_run(user=request.user, **{members.roster.group_field: group}):
                        return members.back(group)
                    return redirect(f"{meta.app_label}-home")
        return render(
            request,
            f"{meta.app_label}/{meta.model_name}_create.html",
            {
                "form": form,
                "person": person,
                "lookup": lookup_from(request) if form is None else None,
            },
        )

    return view
