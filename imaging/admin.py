"""The imaging domain in the Django admin: the establishments' DICOM declarations."""

from django.contrib import admin

from imaging.models import CallingAETitle, DicomDeclaration


class CallingAETitleInline(admin.TabularInline):
    model = CallingAETitle
    extra = 1


@admin.register(DicomDeclaration)
class DicomDeclarationAdmin(admin.ModelAdmin):
    list_display = ["establishment", "pacs_ae_title", "pacs_host", "pacs_port"]
    list_select_related = ["establishment"]
    inlines = [CallingAETitleInline]
