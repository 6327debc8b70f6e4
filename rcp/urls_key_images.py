"""Key images of a case (rcp/views_key_images.py); included under ``rcp/`` by rcp/urls.py."""

from django.urls import path

from rcp import views_key_images as views

urlpatterns = [
    path("dossiers/<int:case_id>/images-cles/", views.key_image_add, name="rcp-case-key-image-add"),
    path(
        "dossiers/<int:case_id>/images-cles/liste/",
        views.key_image_list,
        name="rcp-case-key-images",
    ),
    path(
        "dossiers/<int:case_id>/images-cles/<int:key_image_id>/",
        views.key_image_show,
        name="rcp-case-key-image",
    ),
    path(
        "dossiers/<int:case_id>/images-cles/<int:key_image_id>/retirer/",
        views.key_image_remove,
        name="rcp-case-key-image-remove",
    ),
]
