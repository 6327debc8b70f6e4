from django.urls import path

from imaging import activity_views, metering_views, package_views, views

urlpatterns = [
    path(
        "imagerie/examens/<int:study_id>/lien-visionneuse/",
        views.viewer_link_create,
        name="viewer-link-create",
    ),
    path(
        "imagerie/liens/<int:token_id>/revoquer/",
        views.viewer_link_revoke,
        name="viewer-link-revoke",
    ),
    path("imagerie/examens/<int:study_id>/visionneuse/", views.study_viewer, name="study-viewer"),
    path(
        "imagerie/examens/<int:study_id>/revues/nouvelle/",
        views.review_room_create,
        name="review-room-create",
    ),
    path("revues/", views.review_room_list, name="review-room-list"),
    path("revues/<uuid:room_id>/", views.review_room_detail, name="review-room"),
    path("revues/<uuid:room_id>/fermer/", views.review_room_close, name="review-room-close"),
    path("imagerie/", views.recent_studies, name="recent-studies"),
    path("patients/<int:patient_id>/imagerie/", views.patient_dossier, name="imaging-dossier"),
    path("patients/<int:patient_id>/imagerie/import/", views.study_upload, name="study-upload"),
    path(
        "patients/<int:patient_id>/imagerie/envoi-pacs/",
        views.prefetch_request,
        name="imaging-prefetch",
    ),
    path(
        "patients/<int:patient_id>/imagerie/envoi-pacs/etat/",
        views.prefetch_status,
        name="imaging-prefetch-status",
    ),
    path(
        "patients/<int:patient_id>/imagerie/import/<int:batch_id>/",
        views.ingest_batch_detail,
        name="ingest-batch",
    ),
    path(
        "patients/<int:patient_id>/imagerie/import/<int:batch_id>/progression/",
        views.ingest_batch_progress,
        name="ingest-batch-progress",
    ),
    path(
        "patients/<int:patient_id>/imagerie/import/<int:batch_id>/relancer/",
        views.ingest_batch_retry,
        name="ingest-batch-retry",
    ),
    path(
        "patients/<int:patient_id>/imagerie/comptes-rendus/<int:report_id>/",
        views.study_report_pdf,
        name="study-report-pdf",
    ),
    # DICOMDIR packages (imaging.packages).
    path(
        "imagerie/examens/<int:study_id>/dicomdir/",
        package_views.study_package_request,
        name="study-package-request",
    ),
    path(
        "patients/<int:patient_id>/imagerie/dicomdir/",
        package_views.patient_package_request,
        name="imaging-package-request",
    ),
    path(
        "patients/<int:patient_id>/imagerie/dicomdir/<int:package_id>/",
        package_views.package_detail,
        name="imaging-package",
    ),
    path(
        "patients/<int:patient_id>/imagerie/dicomdir/<int:package_id>/progression/",
        package_views.package_progress,
        name="imaging-package-progress",
    ),
    path(
        "patients/<int:patient_id>/imagerie/dicomdir/<int:package_id>/telecharger/",
        package_views.package_download,
        name="imaging-package-download",
    ),
    # Usage statements (imaging.metering).
    path("imagerie/releves/", metering_views.statement_list, name="imaging-statements"),
    path(
        "imagerie/releves/<int:statement_id>/",
        metering_views.statement_detail,
        name="imaging-statement",
    ),
    path(
        "imagerie/releves/<int:statement_id>/csv/",
        metering_views.statement_csv,
        name="imaging-statement-csv",
    ),
    path(
        "imagerie/releves/<int:statement_id>/pdf/",
        metering_views.statement_outputs,
        name="imaging-statement-outputs",
    ),
    path(
        "imagerie/releves/<int:statement_id>/pdf/demander/",
        metering_views.statement_pdf_request,
        name="imaging-statement-pdf-request",
    ),
    path(
        "imagerie/releves/<int:statement_id>/pdf/<int:document_id>/",
        metering_views.statement_pdf,
        name="imaging-statement-pdf",
    ),
    # The regional programme's imaging indicators (issue 17).
    path("imagerie/indicateurs/", activity_views.activity_page, name="imaging-activity"),
]
