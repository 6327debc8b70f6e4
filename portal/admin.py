"""Administration of accounts and establishments.

Patients and care relationships are not here: they are only reached through the portal's
pages, which check object permissions and audit every access.
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _

from portal import audit
from portal.audit import Actor
from portal.directory import latest_runs
from portal.directory_models import DirectoryActivity, DirectoryImport, DirectoryPerson
from portal.models import Affiliation, Establishment, Professional, User


def _security_state(user: User) -> dict:
    return {
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "permissions": sorted(user.user_permissions.values_list("codename", flat=True)),
    }


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "first_name", "last_name", "is_staff", "is_active"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (_("Identity"), {"fields": ("first_name", "last_name")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def save_related(self, request, form, formsets, change):
        user = form.instance
        before = _security_state(User.objects.get(pk=user.pk)) if change else {}
        # ``before`` for is_* flags must be read before save_model; Django calls
        # save_model first, so compare with the initial form data instead.
        if change:
            before.update(
                {name: form.initial.get(name) for name in ("is_active", "is_staff", "is_superuser")}
            )
        super().save_related(request, form, formsets, change)
        after = _security_state(user)
        if before != after:
            audit.record(
                actor=Actor.from_request(request),
                event=audit.AuditEventId.SECURITY_ALERT,
                event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                action=audit.AuditAction.EXECUTE,
                obj=user,
                detail={"before": before, "after": after},
            )

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            audit.record(
                actor=Actor.from_request(request),
                event=audit.AuditEventId.SECURITY_ALERT,
                event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                action=audit.AuditAction.EXECUTE,
                object_type="portal.user",
                object_id=str(id),
                detail={"password": "set by an administrator"},
            )
        return response


class AffiliationInline(admin.TabularInline):
    model = Affiliation
    extra = 1


@admin.register(Professional)
class ProfessionalAdmin(admin.ModelAdmin):
    list_display = ["__str__", "rpps", "profession", "specialty"]
    list_filter = ["profession", "specialty"]
    search_fields = ["user__email", "user__last_name", "rpps"]
    inlines = [AffiliationInline]
    autocomplete_fields = ["user"]


@admin.register(Establishment)
class EstablishmentAdmin(admin.ModelAdmin):
    list_display = ["name", "finess", "city", "kind"]
    search_fields = ["name", "finess", "city"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """The directory is written by its import only: the admin shows it and never edits it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _count(name: str, label: str):
    """A column of the imports' list: one count of the run's summary."""

    def column(run: DirectoryImport):
        return run.counts.get(name, "—") if run.counts else "—"

    column.short_description = label
    return column


@admin.register(DirectoryImport)
class DirectoryImportAdmin(ReadOnlyAdmin):
    list_display = [
        "file_name",
        "started_at",
        "finished_at",
        _count("lines_read", _("lines read")),
        _count("lines_skipped", _("lines skipped")),
        _count("created", _("created")),
        _count("updated", _("updated")),
        _count("marked_inactive", _("made inactive")),
        _count("professionals_refreshed", _("portal professionals updated")),
        "outcome",
    ]
    readonly_fields = [
        "file_name",
        "file_size",
        "file_modified_at",
        "started_at",
        "finished_at",
        "departments",
        "counts",
        "errors_sample",
        "failure",
    ]

    @admin.display(description=_("outcome"))
    def outcome(self, run: DirectoryImport) -> str:
        if run.failure:
            return _("Failed: %(failure)s") % {"failure": run.failure[:200]}
        return _("Done") if run.finished_at else _("In progress or interrupted")


class DirectoryActivityInline(admin.TabularInline):
    model = DirectoryActivity
    exclude = ["fingerprint"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DirectoryPerson)
class DirectoryPersonAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "rpps", "profession_label", "specialty_label", "is_active"]
    list_filter = ["is_active", "profession_code", "specialty"]
    search_fields = ["national_id", "last_name", "first_name"]
    inlines = [DirectoryActivityInline]

    def changelist_view(self, request, extra_context=None):
        # The directory is only as good as its last import: its date and summary head the list.
        return super().changelist_view(
            request,
            extra_context={**(extra_context or {}), "directory_runs": latest_runs()},
        )
