"""Routes of the shares (imaging.share_views), mounted at /partage/ by portal/urls.py.

The link's token is in the path: portal.logging redacts ``/partage/<token>`` from every log."""

from django.urls import path

from imaging import share_dpo_views, share_views

urlpatterns = [
    path("patients/<int:patient_id>/nouveau/", share_views.share_create, name="share-create"),
    path("gestion/", share_dpo_views.share_dpo_list, name="share-dpo-list"),
    path("gestion/<int:share_id>/revoquer/", share_views.share_revoke, name="share-revoke"),
    path("<slug:token>/", share_views.share_landing, name="share-landing"),
    path("<slug:token>/code/", share_views.share_code, name="share-code"),
    path("<slug:token>/contenu/", share_views.share_contents, name="share-contents"),
    path("<slug:token>/examens/<int:study_id>/", share_views.share_study, name="share-study"),
    path(
        "<slug:token>/documents/<int:document_id>/",
        share_views.share_document,
        name="share-document",
    ),
    path("<slug:token>/paquet/", share_views.share_package_request, name="share-package-request"),
    path(
        "<slug:token>/paquet/<int:package_id>/",
        share_views.share_package_detail,
        name="share-package",
    ),
    path(
        "<slug:token>/paquet/<int:package_id>/telecharger/",
        share_views.share_package_download,
        name="share-package-download",
    ),
]
