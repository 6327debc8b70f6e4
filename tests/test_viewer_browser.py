"""The DICOM viewer and the live shared review, in Chromium against the seeded demo.

Reuses the demo server of tests/test_demo_browser.py (daphne on a free loopback port, its own
SQLite, ``migrate`` + ``seed_demo``) and its Chromium. The viewer is the Vite build in
static/build/ (``cd frontend && npm ci && npm run build``); without it these tests are skipped,
or fail under REQUIRE_SERVICES=1. The viewer exposes test hooks on ``window.mircViewers``.
"""

import pytest

from tests.conftest import require_service
from tests.test_demo_browser import ARTIFACTS, ROOT, _sign_in, browser, demo_server  # noqa: F401
from tests.waiting import on_page, wait_until

pytestmark = pytest.mark.service("chromium")

VIEWER = "window.mircViewers[0]"

TRANSFER_SYNTAX_STUDY = """
import datetime as dt
from django.db import transaction
from pydicom import uid as syntaxes
from demo import synthetic
from demo.imaging import _Result, _identity
from imaging.models import ReviewRoom, Study
from imaging.services import ingest_parsed
from imaging.validation import UploadedFile, parse_dicom
from portal.audit import Actor
room = ReviewRoom.objects.get(title__contains="RCP")
patient = room.patient
identity = _identity(patient, room.study.establishment)
spec = synthetic.StudySpec(study_date=dt.date(2026, 11, 2), institution_name="CHRU de Tours",
                           description="Syntaxes de transfert", accession_number="TSX0001")
spec = synthetic.StudySpec(**{**spec.__dict__,
    "study_instance_uid": synthetic.study_instance_uid(patient=identity, spec=spec)})
names = ["RLELossless", "JPEGLSLossless", "JPEGLSNearLossless", "JPEG2000Lossless", "JPEG2000",
         "JPEGBaseline8Bit", "JPEGLosslessSV1", "ExplicitVRBigEndian",
         "DeflatedExplicitVRLittleEndian", "ImplicitVRLittleEndian"]
datasets = []
for number, name in enumerate(names, start=1):
    syntax = getattr(syntaxes, name)
    if not synthetic.can_encode(syntax):
        continue
    for ds in synthetic.ct_series(patient=identity, study=spec, slices=2, rows=128, columns=128,
                                  series_number=number, description=name, seed=number):
        datasets.append(synthetic.with_transfer_syntax(ds, syntax))
us = synthetic.us_multiframe(patient=identity, study=spec, frames=6, rows=120, columns=160,
                             series_number=50, photometric="RGB", description="US JPEGBaseline8Bit")
datasets.append(synthetic.with_transfer_syntax(us, syntaxes.JPEGBaseline8Bit))
parsed = [(_Result(), parse_dicom(UploadedFile(f"{n}.dcm", synthetic.to_bytes(ds))))
          for n, ds in enumerate(datasets)]
with transaction.atomic():
    ingest_parsed(parsed=parsed, target=patient, actor=Actor.system("tests"))
print(Study.objects.get(study_instance_uid=spec.study_instance_uid).pk)
"""


@pytest.fixture(scope="module")
def viewer_build():
    entry = ROOT / "static" / "build" / "viewer.js"
    if not entry.exists():
        require_service("viewer build", f"{entry} missing: cd frontend && npm ci && npm run build")
    return entry


def _wait(page, expression, *, timeout=10.0, interval=0.025):
    """Polls a JS expression until it is truthy (the portal's CSP forbids the eval that
    Playwright's wait_for_function needs); returns its value."""
    return wait_until(
        lambda: page.evaluate(expression),
        timeout=timeout,
        what=expression,
        sleep=on_page(page),
        longest_pause=interval,
    )


def _signed_in(browser, base, email, errors):  # noqa: F811
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and errors.append(f"{email}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"{email}: {e}"))
    _sign_in(page, base, email)
    page.wait_for_url(f"{base}/")
    return context, page


def _open_viewer(page, base, path):
    page.goto(f"{base}{path}")
    assert page.evaluate(f"{VIEWER}.ready.then(() => true)") is True


def _open(browser, base, email, path, errors):  # noqa: F811
    context, page = _signed_in(browser, base, email, errors)
    _open_viewer(page, base, path)
    return context, page


def _view(page):
    return page.evaluate(f"{VIEWER}.getView()")


def _viewport_centre(page):
    box = page.locator("[data-testid=viewport-1]").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _synced(page, view, annotations=None):
    """A JS expression: the page shows ``view``'s image and window (and these annotations)."""
    check = (
        f"(() => {{ const v = {VIEWER}.getView(); return v && v.series === '{view['series']}'"
        f" && v.index === {view['index']} && v.voi.ww === {view['voi']['ww']}"
        f" && v.voi.wc === {view['voi']['wc']}"
    )
    if annotations is not None:
        check += f" && JSON.stringify({VIEWER}.getAnnotations()) === '{annotations}'"
    return check + "; })()"


def test_a_presenter_leads_a_shared_review(demo_server, browser, viewer_build):  # noqa: F811
    base, _manage = demo_server
    errors = []
    # The coordinator finds the seeded RCP room in her list of review rooms.
    martin_context, martin = _signed_in(browser, base, "c.martin@mirc.test", errors)
    martin.goto(f"{base}/revues/")
    room_path = martin.locator("table tbody tr a", has_text="RCP").first.get_attribute("href")
    _open_viewer(martin, base, room_path)
    moreau_context, moreau = _open(browser, base, "j.moreau@mirc.test", room_path, errors)
    for page in (martin, moreau):
        _wait(page, "document.querySelector('[data-mirc-viewer]').dataset.review === 'connected'")
    _wait(martin, "document.querySelectorAll('[data-testid=presence] li').length === 2")
    assert "Julien Moreau" in martin.locator("[data-testid=presence]").inner_text()

    # Nobody presents: the coordinator takes control, the radiologist follows.
    martin.click("[data-testid=take-control]")
    _wait(martin, f"{VIEWER}.isPresenter()")
    _wait(moreau, f"{VIEWER}.isFollowing()")
    assert not moreau.evaluate(f"{VIEWER}.isPresenter()")
    assert (
        moreau.locator("[data-testid=presence] li[data-presenter=true]")
        .inner_text()
        .startswith("Dr Claire Martin")
    )

    # She scrolls with the wheel, picks the lung window, measures a length with the mouse.
    x, y = _viewport_centre(martin)
    martin.mouse.move(x, y)
    for _ in range(6):
        martin.mouse.wheel(0, 120)
        # Ticks apart in time, as a hand turns the wheel (the input under test, not a wait):
        # Chromium may merge the wheel events of one frame, and each event scrolls one image.
        martin.wait_for_timeout(40)
    _wait(martin, f"{VIEWER}.getView().index >= 3")
    martin.click("[data-testid=preset-lung]")
    martin.click("[data-testid=tool-Length]")
    martin.mouse.move(x - 90, y - 40)
    martin.mouse.down()
    martin.mouse.move(x + 70, y + 35, steps=10)
    martin.mouse.up()
    shown = _view(martin)
    assert shown["voi"] == {"ww": 1500, "wc": -600}
    annotations = martin.evaluate(f"JSON.stringify({VIEWER}.getAnnotations())")
    assert [a["tool"] for a in martin.evaluate(f"{VIEWER}.getAnnotations()")] == ["Length"]

    # The follower catches up (how fast is benchmarks/bench_review.py's to measure, not a
    # test's: a busy machine must not fail it).
    _wait(moreau, _synced(moreau, shown, annotations))
    assert _view(moreau)["index"] == shown["index"] >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    martin.screenshot(path=str(ARTIFACTS / "review-presenter.png"))
    moreau.screenshot(path=str(ARTIFACTS / "review-follower.png"))

    # The radiologist scrolls on his own: he no longer follows, and says so.
    mx, my = _viewport_centre(moreau)
    moreau.mouse.move(mx, my)
    moreau.mouse.wheel(0, 120)
    moreau.mouse.wheel(0, 120)
    _wait(moreau, f"!{VIEWER}.isFollowing()")
    assert moreau.locator("[data-testid=not-following-banner]").is_visible()
    _wait(moreau, f"{VIEWER}.getView().index > {shown['index']}")
    moreau.screenshot(path=str(ARTIFACTS / "review-not-following.png"))
    # The presenter goes on; "Follow again" brings him back to her image at once.
    martin.keyboard.press("ArrowUp")
    _wait(martin, f"{VIEWER}.getView().index === {shown['index'] - 1}")
    moreau.click("[data-testid=follow-again]")
    _wait(moreau, _synced(moreau, _view(martin)))
    assert moreau.evaluate(f"{VIEWER}.isFollowing()")
    assert not moreau.locator("[data-testid=not-following-banner]").is_visible()

    # She hands control to him: he presents, she follows.
    martin.locator("[data-testid=presence] li", has_text="Julien Moreau").locator(
        "[data-testid^=grant-]"
    ).click()
    _wait(moreau, f"{VIEWER}.isPresenter()")
    _wait(martin, f"{VIEWER}.isFollowing() && !{VIEWER}.isPresenter()")
    moreau.mouse.move(mx, my)
    moreau.keyboard.press("PageDown")
    _wait(moreau, f"{VIEWER}.getView().index === {shown['index'] + 9}")
    _wait(martin, _synced(martin, _view(moreau)))
    martin.screenshot(path=str(ARTIFACTS / "review-former-presenter-follows.png"))
    moreau.screenshot(path=str(ARTIFACTS / "review-new-presenter.png"))
    assert not errors, errors
    martin_context.close()
    moreau_context.close()


def _study_of_the_room(manage) -> int:
    out = manage(
        "shell",
        "-c",
        "from imaging.models import ReviewRoom; "
        "print(ReviewRoom.objects.get(title__contains='RCP').study_id)",
    ).stdout
    return int(out.strip().splitlines()[-1])


def test_the_300_slice_ct_opens_and_prefetches(demo_server, browser, viewer_build, capsys):  # noqa: F811
    base, manage = demo_server
    errors = []
    study_id = _study_of_the_room(manage)
    context, page = _open(
        browser, base, "c.martin@mirc.test", f"/imagerie/examens/{study_id}/visionneuse/", errors
    )
    timings = _wait(
        page,
        f"{VIEWER}.timings.prefetchMs !== null && {VIEWER}.timings",
        timeout=120,
        interval=0.25,
    )
    assert timings["prefetchTotal"] == timings["prefetchLoaded"] == 300
    view = _view(page)
    # The CT's own window (mediastinum, 50/350) until the user picks another.
    assert view["index"] == 0 and view["voi"] == {"ww": 350, "wc": 50}
    assert "Image 1 / 300" in page.locator("[data-testid=overlay-bl]").inner_text()
    # Every image is cached: scrolling to the last one needs no network.
    fetched = []
    page.on("request", lambda request: "/dicomweb/" in request.url and fetched.append(request.url))
    page.mouse.move(*_viewport_centre(page))
    page.keyboard.press("End")
    _wait(page, f"{VIEWER}.getView().index === 299")
    assert fetched == []
    page.screenshot(path=str(ARTIFACTS / "viewer-ct-300.png"))
    with capsys.disabled():
        print(
            f"\n300-slice CT: first image {timings['firstImageMs']} ms, "
            f"whole series cached {timings['prefetchMs']} ms"
        )
    assert not errors, errors
    context.close()


def test_a_series_that_fails_to_load_says_so(demo_server, browser, viewer_build):  # noqa: F811
    base, manage = demo_server
    study_id = _study_of_the_room(manage)
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    _sign_in(page, base, "c.martin@mirc.test")
    page.wait_for_url(f"{base}/")
    # The archive is down for this series' metadata.
    page.route("**/dicomweb/studies/*/series/*/metadata", lambda route: route.fulfill(status=503))
    page.goto(f"{base}/imagerie/examens/{study_id}/visionneuse/")
    error = page.locator("[data-testid=viewport-error]")
    error.wait_for(state="visible", timeout=10_000)
    assert "unavailable" in error.inner_text()
    assert page.evaluate(f"{VIEWER}.ready.then(() => 'shown', () => 'failed')") == "failed"
    page.screenshot(path=str(ARTIFACTS / "viewer-error-503.png"))
    # Once the archive is back, "Retry" shows the images.
    page.unroute("**/dicomweb/studies/*/series/*/metadata")
    page.click("[data-testid=retry]")
    _wait(page, f"{VIEWER}.getView() !== null")
    assert not error.is_visible()
    context.close()


def test_every_transfer_syntax_is_decoded_in_the_browser(demo_server, browser, viewer_build):  # noqa: F811
    """The codecs (web worker and WebAssembly, served from /static/build/) under the CSP."""
    base, manage = demo_server
    errors = []
    study_id = int(manage("shell", "-c", TRANSFER_SYNTAX_STUDY).stdout.strip().splitlines()[-1])
    context, page = _open(
        browser, base, "c.martin@mirc.test", f"/imagerie/examens/{study_id}/visionneuse/", errors
    )
    items = page.locator("[data-testid=series-item]")
    names = [text.split("\n")[1] for text in items.all_inner_texts()]
    assert len(names) >= 8, names
    for number, name in enumerate(names):
        series = items.nth(number).get_attribute("data-series")
        items.nth(number).click()
        _wait(
            page,
            f"(() => {{ const v = {VIEWER}.getView(); return v && v.series === '{series}'; }})()",
        )
        assert not page.locator("[data-testid=viewport-error]").is_visible(), name
        page.locator("[data-testid=panel-1]").screenshot(
            path=str(ARTIFACTS / f"viewer-syntax-{number:02d}-{name}.png")
        )
    assert not errors, errors
    context.close()
