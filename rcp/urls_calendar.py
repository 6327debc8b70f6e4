"""iCalendar feeds of the RCP sessions (see rcp/calendar.py)."""

from django.urls import path

from rcp import views_calendar as views

urlpatterns = [
    path("calendrier/", views.calendar_settings, name="rcp-calendar"),
    # Secret token in the address: calendar apps cannot sign in. A token is URL-safe base64,
    # which the slug converter matches.
    path("agenda/<slug:token>.ics", views.user_feed, name="rcp-calendar-feed"),
    path(
        "agenda/<slug:token>/comites/<int:committee_id>.ics",
        views.committee_feed_by_token,
        name="rcp-committee-calendar-feed",
    ),
    path(
        "comites/<int:committee_id>/calendrier.ics",
        views.committee_feed,
        name="rcp-committee-calendar",
    ),
]
