"""Every route of the tele-expertise, under ``teleexpertise/``."""

from django.urls import path

from expertise.views import indicators, lists, outputs, pools, reports, requests

T = "teleexpertise/"
R = T + "demandes/<int:request_id>/"
P = T + "equipes/<int:pool_id>/gestion/"
PDF = R + "compte-rendu/pdf/"

urlpatterns = [
    path(T, lists.expertise_home, name="expertise-home"),
    path(T + "equipes/<int:pool_id>/", lists.pool_board, name="expertise-pool"),
    # --- Pools: set up by the regional administration, run by their coordinators
    path(T + "equipes/nouvelle/", pools.pool_create, name="expertise-pool-create"),
    path(P, pools.pool_manage, name="expertise-pool-manage"),
    path(
        P + "membres/<int:member_id>/role/",
        pools.pool_member_role,
        name="expertise-pool-member-role",
    ),
    path(
        P + "membres/<int:member_id>/retirer/",
        pools.pool_member_remove,
        name="expertise-pool-member-remove",
    ),
    path(P + "reglages/", pools.pool_settings, name="expertise-pool-settings"),
    path(
        T + "patients/<int:patient_id>/nouvelle/",
        requests.request_create,
        name="expertise-request-create",
    ),
    path(R, requests.request_detail, name="expertise-request"),
    path(R + "modifier/", requests.request_edit, name="expertise-request-edit"),
    path(R + "pieces/", requests.attachment_add, name="expertise-attachment-add"),
    path(
        R + "pieces/<int:attachment_id>/",
        requests.attachment_download,
        name="expertise-attachment",
    ),
    path(R + "envoyer/", requests.request_send, name="expertise-request-send"),
    path(R + "accepter/", requests.request_claim, name="expertise-request-claim"),
    path(R + "refuser/", requests.request_decline, name="expertise-request-decline"),
    path(R + "question/", requests.request_ask, name="expertise-request-ask"),
    path(R + "messages/", requests.message_post, name="expertise-message-post"),
    path(R + "cloturer/", requests.request_close, name="expertise-request-close"),
    path(R + "annuler/", requests.request_cancel, name="expertise-request-cancel"),
    path(R + "reprendre/", requests.request_redraft, name="expertise-request-redraft"),
    path(R + "revue/", requests.review_start, name="expertise-review-start"),
    # --- The report, and the PDF of the signed one
    path(R + "compte-rendu/", reports.report_save, name="expertise-report-save"),
    path(R + "compte-rendu/signer/", reports.report_sign, name="expertise-report-sign"),
    path(R + "compte-rendu/confirmer/", reports.report_confirm, name="expertise-report-confirm"),
    path(PDF, outputs.report_outputs, name="expertise-report-outputs"),
    path(PDF + "relancer/", outputs.report_pdf_retry, name="expertise-report-pdf-retry"),
    path(PDF + "<int:document_id>/", outputs.report_pdf_download, name="expertise-report-pdf"),
    # --- Indicators and billing records
    path(T + "indicateurs/", indicators.indicators_page, name="expertise-indicators"),
    path(T + "actes/", indicators.acts_page, name="expertise-acts"),
]
