"""Indicators and billing records; included from expertise/urls.py at the root."""

from django.urls import path

from expertise import views_indicators as views

urlpatterns = [
    path("teleexpertise/indicateurs/", views.indicators_page, name="expertise-indicators"),
    path("teleexpertise/actes/", views.acts_page, name="expertise-acts"),
]
