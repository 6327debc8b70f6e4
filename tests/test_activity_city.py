"""The regional programme's city-doctor figures and tele-expertise outcomes (issue 17), as the
nightly job computes them (imaging.activity) on a small hand-built world, Europe/Paris, 2026:

* The CHRU archives a chest CT (S1, January); Blois a head MR (S2, February).
* Dr Leroy, a general practitioner with no establishment, opens S1 on 3 February (viewer) and
  4 February (DICOMweb, by UID): once that month; again in March; and S2 on 5 February. A
  cardiologist without establishment (not a GP) and the CHRU's radiologist open them too:
  no city consultation.
* The CHRU's radiologist shares S1 with a doctor outside the portal on 6 February (share A)
  and again on 2 March (share C); Blois shares S2 on 7 February (share B, never opened).
  Share A is opened twice (its page), once for S1's images and once for its DICOMDIR zip in
  February, once in March: 4 then 1 openings for the CHRU.
* DICOMDIR packages: one asked by the CHRU's radiologist (ready), share A's (ready), share
  B's (built, since expired): 2 for the CHRU, 1 for Blois in February; a failed one and a
  waiting one are not built.
* Blois asks the CHRU's teleradiology three times in February: one answered in 10 hours and
  closed "exam avoided", one answered in 30 hours and closed "transfer avoided", one never
  answered.
"""

import datetime as dt
import hashlib

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from imaging import shares
from imaging.activity import FIGURES, activity_compute
from imaging.models import Share, StudyOrigin, StudyPackage
from portal.audit import Actor
from tests import builders
from tests.test_activity_indicators import at, figures, make_study, opens

pytestmark = [pytest.mark.django_db]

JAN, FEB, MAR = dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)
CITY = ("city_consultations", "shares_made", "share_openings", "packages_made")


@pytest.fixture(autouse=True)
def _activity_settings(settings):
    settings.ACTIVITY_MONTH_CLOSES_AFTER_DAYS = 15
    settings.ACTIVITY_REPEAT_WINDOWS = {"CT": 30, "MR": 30}


def make_share(key, study, author, created_at):
    return Share.objects.create(
        patient=study.patient,
        author=author.user,
        recipient_name="Dr Externe",
        recipient_email="externe@ville.test",
        created_at=created_at,
        expires_at=created_at + dt.timedelta(days=30),
        link_token_hash=hashlib.sha256(key.encode()).hexdigest(),
    )


def recipient_opens(share, moment, **kwargs):
    with time_machine.travel(moment, tick=False):
        shares.share_opened(share=share, actor=Actor(name=shares.share_actor_name(share)), **kwargs)


def package(patient, finished_at, status=StudyPackage.Status.READY, **fields):
    return StudyPackage.objects.create(
        patient=patient, status=status, finished_at=finished_at, **fields
    )


@pytest.fixture
def city():
    chu = builders.establishment(name="CHRU de Tours")
    blois = builders.establishment(name="CH de Blois")
    radiologist = builders.professional(
        email="radio@chu.test", first_name="Anne", last_name="Roux", establishment=chu
    )
    blois_doctor = builders.professional(
        email="radio@blois.test", first_name="Paul", last_name="Morel", establishment=blois
    )
    gp = builders.professional(
        email="leroy@ville.test",
        first_name="Claire",
        last_name="Leroy",
        specialty="medecine_generale",
    )
    cardiologist = builders.professional(
        email="coeur@ville.test", first_name="Luc", last_name="Petit", specialty="cardiologie"
    )
    martin = builders.patient(birth_name="Martin", first_names="Jeanne")
    s1 = make_study(1, martin, chu, "CT", "CHEST", at(1, 10), "access_point")
    s2 = make_study(2, martin, blois, "MR", "HEAD", at(2, 2), StudyOrigin.UPLOAD)
    opens(gp, s1, at(2, 3))
    opens(gp, s1, at(2, 4), by_uid=True)  # the same month: once
    opens(gp, s1, at(3, 3))  # another month: again
    opens(gp, s2, at(2, 5))
    opens(cardiologist, s2, at(2, 6))  # not a general practitioner
    opens(radiologist, s1, at(2, 6))  # the establishment's own radiologist

    share_a = make_share("a", s1, radiologist, at(2, 6))
    share_b = make_share("b", s2, blois_doctor, at(2, 7))
    share_c = make_share("c", s1, radiologist, at(3, 2))
    share_a.studies.set([s1])
    recipient_opens(share_a, at(2, 6, 14), what="contents")
    recipient_opens(share_a, at(2, 6, 15), what="contents")
    # The recipient's look at the images: a share opening, not a city consultation (the
    # trail has no account behind it).
    recipient_opens(share_a, at(2, 6, 16), what="study", obj=s1)
    recipient_opens(share_a, at(3, 1), what="contents")
    assert share_c.pk  # made in March, never opened

    package(martin, at(2, 8), requested_by=radiologist.user)
    zipped = package(martin, at(2, 10), share=share_a)
    with time_machine.travel(at(2, 10, 15), tick=False):
        shares.share_package_downloaded(
            share=share_a, package=zipped, actor=Actor(name=shares.share_actor_name(share_a))
        )
    package(martin, at(2, 9), status=StudyPackage.Status.EXPIRED, share=share_b)
    package(martin, at(2, 9), status=StudyPackage.Status.FAILED, requested_by=gp.user)
    package(martin, None, status=StudyPackage.Status.QUEUED, requested_by=radiologist.user)
    return {
        "chu": chu,
        "blois": blois,
        "radiologist": radiologist,
        "blois_doctor": blois_doctor,
        "patient": martin,
        "studies": (s1, s2),
    }


def city_figures(establishment, month):
    return {key: value for key, value in figures(establishment, month).items() if key[1] in CITY}


def test_city_doctor_figures_are_exact(city):
    activity_compute(now=at(4, 20))

    assert city_figures(city["chu"], FEB) == {
        ("CT", "city_consultations"): 1,  # S1, twice by Dr Leroy
        ("", "shares_made"): 1,  # share A
        ("", "share_openings"): 4,  # its page twice, S1's images, the zip
        ("", "packages_made"): 2,  # the radiologist's and share A's
    }
    assert city_figures(city["chu"], MAR) == {
        ("CT", "city_consultations"): 1,
        ("", "shares_made"): 1,  # share C
        ("", "share_openings"): 1,
    }
    assert city_figures(city["blois"], FEB) == {
        ("MR", "city_consultations"): 1,  # the cardiologist's opening does not count
        ("", "shares_made"): 1,  # share B, never opened
        ("", "packages_made"): 1,  # share B's, expired since: it was built
    }
    assert city_figures(city["chu"], JAN) == {}
    assert city_figures(None, FEB) == {}  # the failed package is nobody's


def test_a_closed_month_keeps_its_city_figures(city):
    activity_compute(now=at(4, 20))  # February closes
    # A share made afterwards but dated in February: the closed month does not change.
    make_share("late", city["studies"][0], city["radiologist"], at(2, 20))
    activity_compute(now=at(4, 21))
    assert city_figures(city["chu"], FEB)[("", "shares_made")] == 1


def test_city_figures_are_counted_in_summary_queries(city):
    """More openings, shares and packages: not one query more (summary queries only)."""

    def queries() -> int:
        with CaptureQueriesContext(connection) as run:
            activity_compute(now=at(3, 10))
        return len(run.captured_queries)

    queries()  # January closes, the months' states are written: the runs below are alike
    before = queries()
    s1, s2 = city["studies"]
    gp = builders.professional(
        email="bis@ville.test", first_name="Marc", last_name="Bis", specialty="medecine_generale"
    )
    for n in range(3):
        opens(gp, s2, at(2, 21 + n))
        share = make_share(f"more{n}", s2, city["blois_doctor"], at(2, 21 + n))
        recipient_opens(share, at(2, 22 + n), what="contents")
        package(city["patient"], at(2, 22 + n), share=share)
    opens(gp, s1, at(2, 21), by_uid=True)
    assert queries() == before
    assert city_figures(city["blois"], FEB)[("", "share_openings")] == 3


def test_every_city_figure_is_explained():
    for key in CITY:
        assert str(FIGURES[key])


# --- Tele-expertise: exam avoided, transfer avoided, time to answer ----------------------------


def _answered_and_closed(pool, asker, expert, study, outcome):
    from expertise import services
    from tests.expertise_world import REPORT

    details = {
        "question": "Nodule ?",
        "patient_informed": True,
        "consent_date": timezone.localdate(),
        "consent_method": "oral",
    }
    made = builders.request(
        patient=study.patient, pool=pool, by=asker.user, studies=[study], send=True, **details
    )
    if outcome is None:
        return made
    as_expert = Actor(user=expert.user)
    claimed = services.request_claim(request=made, by=as_expert)
    report = services.report_save(request=claimed, by=as_expert, revision=None, **REPORT)
    services.report_sign_and_send(request=claimed, by=as_expert, revision=report.revision)
    claimed.refresh_from_db()
    return services.request_close(request=claimed, by=Actor(user=asker.user), outcome=outcome)


def _dated(request, *, sent_at, answered_at=None, closed_at=None):
    """The request's dates moved into the world's February (as the demo dates its stories)."""
    type(request).objects.filter(pk=request.pk).update(
        sent_at=sent_at, answered_at=answered_at, closed_at=closed_at
    )


def test_exam_and_transfer_avoided_and_the_time_to_answer(city):
    from expertise.models import Request
    from portal.models import CareRole

    Outcome = Request.Outcome
    chu, blois = city["chu"], city["blois"]
    asker, expert = city["blois_doctor"], city["radiologist"]
    study = city["studies"][1]  # Blois's MR
    builders.care_team(city["patient"], (asker, CareRole.REFERRING))
    pool = builders.pool(
        name="Téléradiologie",
        specialty="radiologie",
        establishment=chu,
        members=[(expert, "expert")],
    )
    exam = _answered_and_closed(pool, asker, expert, study, Outcome.EXAM_AVOIDED)
    transfer = _answered_and_closed(pool, asker, expert, study, Outcome.TRANSFER_AVOIDED)
    waiting = _answered_and_closed(pool, asker, expert, study, None)
    _dated(exam, sent_at=at(2, 11, 8), answered_at=at(2, 11, 18), closed_at=at(2, 12))
    _dated(transfer, sent_at=at(2, 11, 8), answered_at=at(2, 12, 14), closed_at=at(3, 2))
    _dated(waiting, sent_at=at(2, 20))

    activity_compute(now=at(4, 20))

    def expertise(month):
        return {
            figure: value
            for (modality, figure), value in figures(blois, month).items()
            if figure.startswith("expertise_") and "studies" not in figure
        }

    assert expertise(FEB) == {
        "expertise_exam_avoided": 1,
        "expertise_answered": 2,  # the third is still unanswered
        "expertise_answer_seconds": (10 + 30) * 3600,
    }
    # Closed in March: its answer counts in February, when it was sent.
    assert expertise(MAR) == {"expertise_transfer_avoided": 1}


def test_the_close_out_form_offers_the_two_answers_not_the_former_one():
    from expertise.forms import CloseForm
    from expertise.models import Request

    offered = [value for value, _label in CloseForm().fields["outcome"].choices]
    assert offered == ["exam_avoided", "transfer_avoided", "not_avoided", "unsure"]
    assert not CloseForm({"outcome": "avoided"}).is_valid()
    # A request closed before the split still reads its answer.
    assert "ancienne réponse" in Request(outcome="avoided").get_outcome_display()


def test_the_expertise_indicators_count_every_avoided_answer():
    from expertise.indicators import _figures, _Sent
    from expertise.models import Request

    def closed(outcome):
        now = at(2, 1)
        return _Sent(1, now, now, now, now, Request.State.CLOSED, outcome, False)

    row = _figures(
        None,
        [closed("exam_avoided"), closed("transfer_avoided"), closed("avoided"), closed("unsure")],
        cutoff=at(3, 1),
    )
    assert (row.avoided.count, row.avoided.total) == (3, 4)
