from django.urls import path

from imaging import admin_views

urlpatterns = [
    path(
        "etablissements/<int:establishment_id>/dicom/",
        admin_views.dicom_declaration,
        name="administration-dicom",
    ),
]
