"""The indicator pages and their CSV exports give what they gave before they moved onto the
shared indicators machinery (portal/indicators.py): the RCP's (one committee, every
committee, one chosen committee, a bad period) and the tele-expertise's (every pool, a bad
filter), and the billing records' CSV that shares their writer, rendered from a fixed world at
a fixed time and compared with what the code produced before the move
(tests/fixtures/indicator_outputs/, made by this same test with ``UPDATE_INDICATOR_OUTPUTS=1``).

The CSV files are compared byte for byte (the BOM, the separator, the line ends, the decimal
format); the pages by their ``<main>``, white space folded. What the world cannot fix (database
ids, which depend on what ran before in the database) is replaced by a placeholder first.
"""

import datetime as dt
import os
import re
from pathlib import Path

import pytest
import time_machine
from django.urls import reverse

from tests.conftest import client_for
from tests.permission_matrix import _regional_programme
from tests.test_expertise_acts import answered_for_the_oncologist, billing_office
from tests.test_expertise_indicators import activity  # noqa: F401
from tests.test_rcp_indicators import board  # noqa: F401

pytestmark = pytest.mark.django_db

EXPECTED = Path(__file__).parent / "fixtures" / "indicator_outputs"
ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}
# Mid-afternoon in Paris: the default period (the last twelve months) and every delay are fixed.
MOMENT = dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC)
IDS = re.compile(
    r'(/comites/|/seances/|value="|committee=|pool=|indicateurs-rcp-)\d+(?=[/"&]|-\d{8}-)'
)
# The billing records' request number, the line's last column but one.
REQUEST_NUMBER = re.compile(r";\d+;(yes|no)\r\n")
# The personas' RPPS numbers come from a counter the whole test run shares.
RPPS = re.compile(r"\b997\d{8}\b")


@pytest.fixture(autouse=True)
def frozen():
    # Set up before the worlds (autouse fixtures come first), so their dates are fixed too.
    with time_machine.travel(MOMENT, tick=False):
        yield


def _compare(name: str, content: bytes) -> None:
    path = EXPECTED / name
    if os.environ.get("UPDATE_INDICATOR_OUTPUTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    assert content == path.read_bytes()


def _without_ids(text: str) -> str:
    text = REQUEST_NUMBER.sub(r";<id>;\1\r\n", IDS.sub(r"\1<id>", text))
    return RPPS.sub("<rpps>", text)


def _csv(name: str, response) -> None:
    assert response.status_code == 200
    disposition = _without_ids(response["Content-Disposition"])
    content = _without_ids(response.content.decode("utf-8")).encode("utf-8")
    _compare(name, f"{response['Content-Type']}\n{disposition}\n".encode() + content)


def _page(name: str, response, status: int = 200) -> None:
    assert response.status_code == status
    html = response.content.decode()
    main = html[html.index('<main id="main">') : html.index("</main>")]
    folded = re.sub(r"\s+", " ", re.sub(r">\s+<", "><", main)).strip()
    _compare(name, (_without_ids(folded) + "\n").encode())


def test_the_rcp_indicators_read_as_before(board):  # noqa: F811
    w = board.world
    member = client_for(w.coordinator.user)
    one = reverse("rcp-committee-indicators", args=[w.thoracic.pk])
    _page("rcp_committee.html", member.get(one, **ENGLISH))
    _page(
        "rcp_committee_bad.html",
        member.get(one, {"start": "2026-03-02", "end": "2026-01-01"}, **ENGLISH),
        400,
    )
    one_csv = reverse("rcp-committee-indicators-csv", args=[w.thoracic.pk])
    _csv("rcp_committee.csv", member.get(one_csv, **ENGLISH))
    _csv("rcp_committee_fr.csv", member.get(one_csv, HTTP_ACCEPT_LANGUAGE="fr"))

    programme = client_for(_regional_programme(w))
    _page("rcp_all.html", programme.get(reverse("rcp-indicators"), **ENGLISH))
    chosen = {"committee": w.thoracic.pk, "start": "2025-06-01", "end": "2026-03-01"}
    _page("rcp_chosen.html", programme.get(reverse("rcp-indicators"), chosen, **ENGLISH))
    _page(
        "rcp_all_bad.html", programme.get(reverse("rcp-indicators"), {"start": "x"}, **ENGLISH), 400
    )
    _csv("rcp_all.csv", programme.get(reverse("rcp-indicators-csv"), **ENGLISH))
    _csv("rcp_chosen.csv", programme.get(reverse("rcp-indicators-csv"), chosen, **ENGLISH))


def test_the_tele_expertise_indicators_read_as_before(activity):  # noqa: F811
    programme = client_for(_regional_programme(activity.world))
    url = reverse("expertise-indicators")
    _page("expertise.html", programme.get(url, **ENGLISH))
    _page("expertise_bad.html", programme.get(url, {"end": "1999-01-01"}, **ENGLISH), 400)
    _csv("expertise.csv", programme.get(url, {"format": "csv"}, **ENGLISH))
    _csv("expertise_fr.csv", programme.get(url, {"format": "csv"}, HTTP_ACCEPT_LANGUAGE="fr"))


def test_the_billing_records_read_as_before(world):
    answered_for_the_oncologist(world)
    today = {"start": "2026-03-02", "end": "2026-03-02", "format": "csv"}
    officer = client_for(billing_office(world))
    _csv("acts.csv", officer.get(reverse("expertise-acts"), today, **ENGLISH))
