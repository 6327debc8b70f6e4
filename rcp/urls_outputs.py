"""PDF outputs of the RCP: the fiche RCP of a case and the session minutes."""

from django.urls import path

from rcp import views_outputs as views

urlpatterns = [
    path("dossiers/<int:case_id>/pdf/", views.case_outputs, name="rcp-case-outputs"),
    path(
        "dossiers/<int:case_id>/pdf/generer/", views.case_pdf_request, name="rcp-case-pdf-request"
    ),
    path(
        "dossiers/<int:case_id>/pdf/<int:document_id>/",
        views.case_pdf_download,
        name="rcp-case-pdf",
    ),
    path("seances/<int:session_id>/pdf/", views.session_outputs, name="rcp-session-outputs"),
    path(
        "seances/<int:session_id>/pdf/generer/",
        views.minutes_pdf_request,
        name="rcp-minutes-pdf-request",
    ),
    path(
        "seances/<int:session_id>/pdf/<int:document_id>/",
        views.minutes_pdf_download,
        name="rcp-minutes-pdf",
    ),
]
