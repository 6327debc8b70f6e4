"""The RCP indicators, of one committee or all; included from rcp/urls.py under ``rcp/``."""

from django.urls import path

from rcp import views_indicators as views

urlpatterns = [
    path("indicateurs/", views.indicators_page, name="rcp-indicators"),
    path("indicateurs.csv", views.indicators_csv, name="rcp-indicators-csv"),
    path(
        "comites/<int:committee_id>/indicateurs/",
        views.committee_indicators_page,
        name="rcp-committee-indicators",
    ),
    path(
        "comites/<int:committee_id>/indicateurs.csv",
        views.committee_indicators_csv,
        name="rcp-committee-indicators-csv",
    ),
]
