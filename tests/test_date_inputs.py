"""Dates survive a round trip through the browser's date inputs, in French as in English.

An ``<input type="date">`` only shows (and posts back) an ISO value; a value the portal
localised to dd/mm/yyyy is shown empty and posted back empty, so the next save erased it.
"""

import datetime as dt
import re
from html.parser import HTMLParser

import pytest
from django import forms
from django.urls import get_resolver, reverse
from django.utils import translation

from portal.audit import Actor
from rcp import services
from rcp.models import Case
from tests.conftest import client_for
from tests.rcp_world import COMPLETE_THORACIC, rcp_world
from tests.test_demo_browser import _sign_in, browser, demo_server  # noqa: F401

DIAGNOSED = dt.date(2026, 9, 15)
# HTML "value sanitization": what is not a valid date string becomes the empty string.
BROWSER_KEEPS = {"date": r"\d{4}-\d{2}-\d{2}", "datetime-local": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}"}


class _FormAsBrowser(HTMLParser):
    """What a browser posts for the form with ``data-testid``, left as the page rendered it."""

    def __init__(self, testid):
        super().__init__()
        self.testid, self.inside, self.data = testid, False, []
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("data-testid") == self.testid:
            self.inside = True
        if not self.inside or "disabled" in attrs:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind, value = attrs.get("type", "text"), attrs.get("value") or ""
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self.data.append((name, attrs.get("value", "on")))
            elif kind not in ("submit", "button", "file"):
                if kind in BROWSER_KEEPS and not re.fullmatch(BROWSER_KEEPS[kind], value):
                    value = ""
                self.data.append((name, value))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attrs:
            self.data.append((self._select, attrs.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data.append((name, ""))

    def handle_data(self, data):
        if self.inside and self._textarea:
            self.data[-1] = (self._textarea, self.data[-1][1] + data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def post_data(self):
        posted = {}
        for name, value in self.data:
            posted.setdefault(name, []).append(value)
        return posted


def _as_browser_posts(html, testid):
    parser = _FormAsBrowser(testid)
    parser.feed(html)
    return parser.post_data()


def _draft_with_diagnosis_date(world):
    rcp_world(world)
    by = Actor(user=world.oncologist.user)
    case = services.case_create(patient=world.patient, committee=world.thoracic, by=by)
    return services.case_update(
        case=case,
        revision=case.revision,
        by=by,
        **{**COMPLETE_THORACIC, "diagnosis_date": DIAGNOSED},
    )


@pytest.mark.django_db
def test_the_diagnosis_date_is_shown_in_iso_to_the_date_input_of_a_french_page(world):
    case = _draft_with_diagnosis_date(world)
    page = client_for(world.oncologist.user).get(reverse("rcp-case", args=[case.pk]))
    html = page.content.decode()
    assert 'lang="fr"' in html  # the portal's default language, whose dates are dd/mm/yyyy
    assert _as_browser_posts(html, "case-form")["diagnosis_date"] == ["2026-09-15"]


@pytest.mark.django_db
def test_saving_the_fiche_rcp_twice_unchanged_keeps_the_diagnosis_date(world):
    case = _draft_with_diagnosis_date(world)
    doctor = client_for(world.oncologist.user)
    url = reverse("rcp-case", args=[case.pk])
    for _ in range(2):
        response = doctor.post(
            url, _as_browser_posts(doctor.get(url).content.decode(), "case-form")
        )
        assert response.status_code == 302
    case = Case.objects.get(pk=case.pk)
    assert case.diagnosis_date == DIAGNOSED
    assert case.revision > 1  # both saves went through


def _all_form_classes():
    get_resolver().url_patterns  # noqa: B018 (imports every view, hence every form)
    pending, found = [forms.Form], []
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.split(".")[0] in ("portal", "rcp", "expertise", "imaging"):
                found.append(sub)
    return found


@pytest.mark.django_db
def test_every_date_field_of_the_portal_renders_iso_in_french():
    checked = 0
    with translation.override("fr"):
        for form_class in _all_form_classes():
            for name, field in form_class.base_fields.items():
                where = f"{form_class.__module__}.{form_class.__name__}.{name}"
                if isinstance(field, forms.DateTimeField):
                    rendered = field.widget.format_value(
                        dt.datetime(2026, 9, 15, 14, 30, tzinfo=dt.UTC)
                    )
                    assert (field.widget.input_type, rendered) == (
                        "datetime-local",
                        "2026-09-15T14:30",
                    ), where
                elif isinstance(field, forms.DateField):
                    rendered = field.widget.format_value(DIAGNOSED)
                    assert (field.widget.input_type, rendered) == ("date", "2026-09-15"), where
                else:
                    continue
                checked += 1
    assert checked >= 8  # the fiche RCP, the perinatal fiche, consent, the period filters...


@pytest.mark.service("chromium")
def test_in_chromium_a_diagnosis_date_survives_two_saves_of_the_fiche_rcp(demo_server, browser):  # noqa: F811
    base, manage = demo_server
    patient_id = manage(
        "shell",
        "-c",
        "from demo.imaging import _patient; print(_patient('c.martin@mirc.test', 0).pk)",
    ).stdout.split()[-1]
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    _sign_in(page, base, "c.martin@mirc.test")
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/patients/{patient_id}/rcp/nouveau/")
    page.select_option("select[name=committee]", label="RCP thoracique — CHRU de Tours")
    page.click("main button[type=submit]")
    page.fill("input[name=diagnosis_date]", "2026-09-15")
    for _ in range(2):
        with page.expect_navigation():
            page.click("[data-testid=case-form] button[type=submit]")
        assert page.locator("input[name=diagnosis_date]").input_value() == "2026-09-15"
    context.close()
