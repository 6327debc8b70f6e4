"""Indicators of a committee; included from rcp/urls.py under ``rcp/``."""

from django.urls import path

from rcp import views_indicators as views

urlpatterns = [
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
