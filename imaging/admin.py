"""The imaging domain in the Django admin: the establishments' DICOM declarations, and the
prefetch of priors to their PACS (read only: requests are made by admissions and users)."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from imaging.models import CallingAETitle, DicomDeclaration, PrefetchItem, PrefetchRequest


class CallingAETitleInline(admin.TabularInline):
    model = CallingAETitle
    extra = 1


@admin.register(DicomDeclaration)
class DicomDeclarationAdmin(admin.ModelAdmin):
    list_display = ["establishment", "pacs_ae_title", "pacs_host", "pacs_port", "prefetch_enabled"]
    list_select_related = ["establishment"]
    inlines = [CallingAETitleInline]
    fieldsets = [
        (
            None,
            {"fields": ["establishment", "pacs_ae_title", "pacs_host", "pacs_port", "pacs_tls"]},
        ),
        (
            _("Prefetch of priors"),
            {
                "fields": [
                    "prefetch_enabled",
                    "prefetch_years",
                    "prefetch_max_studies",
                    "prefetch_modalities_first",
                ]
            },
        ),
    ]


class PrefetchItemInline(admin.TabularInline):
    model = PrefetchItem
    fields = ["position", "study", "sent", "instances_sent"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PrefetchRequest)
class PrefetchRequestAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "establishment",
        "trigger",
        "state",
        "will_retry",
        "instances_sent",
        "instances_total",
        "attempts",
    ]
    list_filter = ["state", "trigger", "establishment"]
    list_select_related = ["establishment"]
    readonly_fields = [
        "patient",
        "establishment",
        "trigger",
        "requested_by",
        "destination_ae_title",
        "state",
        "will_retry",
        "instances_total",
        "instances_sent",
        "attempts",
        "error",
        "created_at",
        "updated_at",
        "finished_at",
    ]
    inlines = [PrefetchItemInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
