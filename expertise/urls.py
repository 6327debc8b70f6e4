from django.urls import include, path

from expertise import views

R = "teleexpertise/demandes/<int:request_id>/"

urlpatterns = [
    path("teleexpertise/", views.expertise_home, name="expertise-home"),
    path(
        "teleexpertise/patients/<int:patient_id>/nouvelle/",
        views.request_create,
        name="expertise-request-create",
    ),
    path(R, views.request_detail, name="expertise-request"),
    path(R + "modifier/", views.request_edit, name="expertise-request-edit"),
    path(R + "pieces/", views.attachment_add, name="expertise-attachment-add"),
    path(R + "pieces/<int:attachment_id>/", views.attachment_download, name="expertise-attachment"),
    path(R + "envoyer/", views.request_send, name="expertise-request-send"),
    path(R + "accepter/", views.request_claim, name="expertise-request-claim"),
    path(R + "refuser/", views.request_decline, name="expertise-request-decline"),
    path(R + "question/", views.request_ask, name="expertise-request-ask"),
    path(R + "messages/", views.message_post, name="expertise-message-post"),
    path(R + "compte-rendu/", views.report_save, name="expertise-report-save"),
    path(R + "compte-rendu/signer/", views.report_sign, name="expertise-report-sign"),
    path(R + "compte-rendu/confirmer/", views.report_confirm, name="expertise-report-confirm"),
    path(R + "cloturer/", views.request_close, name="expertise-request-close"),
    path(R + "annuler/", views.request_cancel, name="expertise-request-cancel"),
    path(R + "reprendre/", views.request_redraft, name="expertise-request-redraft"),
    path(R + "revue/", views.review_start, name="expertise-review-start"),
    path("teleexpertise/equipes/<int:pool_id>/", views.pool_board, name="expertise-pool"),
    path("", include("expertise.urls_outputs")),
    path("", include("expertise.urls_indicators")),
]
