"""The portal's own error pages, as production and the demo show them (DEBUG off).

Django's technical pages list the URL patterns and the settings: nobody outside the
development team sees them. The portal answers in French, in English after the language
switch, and never says why a record is out of reach (403/404 look the same to outsiders).
"""

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import include, path, reverse

from tests.test_i18n import catalogues, compiled_locale  # noqa: F401 - fixtures


def _refuse(request):
    raise PermissionDenied("dossier 42 belongs to the CHU de Tours")


def _fail(request):
    raise RuntimeError("database password is hunter2")


urlpatterns = [
    path("test/refus/", _refuse),
    path("test/panne/", _fail),
    path("", include("portal.urls")),
]

pytestmark = [pytest.mark.urls("tests.test_error_pages"), pytest.mark.usefixtures("catalogues")]

TECHNICAL = ("URLconf", "urlpatterns", "Traceback", "DEBUG = True", "Django tried these")


@pytest.fixture(autouse=True)
def _production_mode(settings):
    settings.DEBUG = False


def _english(client: Client) -> Client:
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    return client


def _page(response) -> str:
    page = response.content.decode()
    assert not any(word in page for word in TECHNICAL), page
    assert 'href="/static/css/portal.css"' in page
    return page


def test_an_unknown_address_shows_the_portals_page_in_french(db):
    response = Client().get("/nulle-part/")
    assert response.status_code == 404
    page = _page(response)
    assert "Page introuvable" in page and "Retour à l'accueil" in page
    assert '<html lang="fr">' in page


def test_an_unknown_address_shows_the_portals_page_in_english_after_the_switch(db):
    response = _english(Client()).get("/nulle-part/")
    assert response.status_code == 404
    page = _page(response)
    assert "Page not found" in page and "Back to the home page" in page
    assert '<html lang="en">' in page


def test_a_refusal_shows_the_portals_403_and_not_its_reason(db):
    response = Client().get("/test/refus/")
    assert response.status_code == 403
    page = _page(response)
    assert "Accès refusé" in page
    # The reason's words, not a bare "42": the page's random CSRF token may hold that.
    assert "CHU de Tours" not in page and "dossier 42" not in page and "belongs to" not in page


def test_a_crash_shows_the_portals_500_in_french_without_details(db):
    response = Client(raise_request_exception=False).get("/test/panne/")
    assert response.status_code == 500
    page = _page(response)
    assert "Une erreur est survenue" in page
    assert "hunter2" not in page and "RuntimeError" not in page


def test_a_crash_shows_the_500_in_english_after_the_switch(db):
    client = _english(Client(raise_request_exception=False))
    response = client.get("/test/panne/")
    assert response.status_code == 500
    page = _page(response)
    assert "Something went wrong" in page and '<html lang="en">' in page


def test_the_500_page_renders_without_the_database(rf):
    """What Django does when everything else failed: no context processors, no queries
    (without the ``db`` fixture, pytest-django refuses any database access)."""
    from django.views.defaults import server_error

    response = server_error(rf.get("/"))
    assert response.status_code == 500
    assert "Une erreur est survenue" in _page(response)


def test_a_bad_request_shows_the_portals_400(db, settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    response = Client(raise_request_exception=False).get("/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    page = _page(response)
    assert "Requête incorrecte" in page


def test_an_expired_form_shows_the_portals_403_not_djangos(db):
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert response.status_code == 403
    page = _page(response)
    assert "Accès refusé" in page and "CSRF" not in page
    assert "rechargez la page" in page
