"""The PDF of the signed report of a tele-expertise request."""

from django.urls import path

from expertise import views_outputs as views

R = "teleexpertise/demandes/<int:request_id>/compte-rendu/pdf/"

urlpatterns = [
    path(R, views.report_outputs, name="expertise-report-outputs"),
    path(R + "relancer/", views.report_pdf_retry, name="expertise-report-pdf-retry"),
    path(R + "<int:document_id>/", views.report_pdf_download, name="expertise-report-pdf"),
]
