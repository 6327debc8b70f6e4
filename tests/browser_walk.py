"""What every role's walk through the demo needs: the two screen sizes the pilot used, a
signed-in page at each, screenshots named by role, size and step, and the layout checks
(nothing wider than the screen, the important part above the fold).

The walks run against ``tests.test_demo_browser.demo_server`` (a module's own copy of the
seeded demo served by daphne) in Debian's Chromium.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.test_demo_browser import ARTIFACTS, _sign_in
from tests.waiting import on_page, wait_until

# A 3C's office laptop and a tablet held upright in the meeting room.
SIZES = {
    "1366x768": {"width": 1366, "height": 768},
    "tablet": {"width": 768, "height": 1024},
}


@dataclass
class Walk:
    """One user's signed-in browser at one size."""

    role: str
    size: str
    base: str
    context: object
    page: object
    errors: list[str] = field(default_factory=list)
    steps: int = 0

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")

    def shot(self, step: str) -> None:
        """A screenshot in the test artifacts, in the order of the walk."""
        self.steps += 1
        ARTIFACTS.mkdir(exist_ok=True)
        name = f"walk-{self.role}-{self.size}-{self.steps:02d}-{step}.png"
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def page_width_overflow(self) -> int:
        """How many CSS pixels the page is wider than the screen (0: no sideways scrolling)."""
        return self.page.evaluate(
            "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )

    def assert_fits_width(self, what: str = "") -> None:
        overflow = self.page_width_overflow()
        assert overflow <= 0, (
            f"{self.role} at {self.size}: {what or self.page.url} is {overflow}px wider "
            "than the screen"
        )

    def assert_above_fold(self, selector: str) -> None:
        """The element is entirely visible without scrolling."""
        box = self.page.locator(selector).first.bounding_box()
        assert box is not None, f"{selector} is not shown"
        viewport = self.page.viewport_size
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"] + 1, (
            f"{self.role} at {self.size}: {selector} ends at {box['y'] + box['height']:.0f}px, "
            f"below the fold ({viewport['height']}px)"
        )
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1, (
            f"{self.role} at {self.size}: {selector} is cut on the right"
        )

    def wait_until(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        """Polls a Python predicate until it holds (a deadline, never a fixed sleep)."""
        wait_until(predicate, timeout=timeout, what=what, sleep=on_page(self.page))

    def close(self) -> None:
        self.context.close()


def open_as(browser, base: str, email: str, *, role: str, size: str, locale="fr-FR") -> Walk:
    """Signs ``email`` in at ``size`` and lands on the home page."""
    context = browser.new_context(locale=locale, viewport=SIZES[size], bypass_csp=True)
    page = context.new_page()
    walk = Walk(role=role, size=size, base=base, context=context, page=page)
    page.on(
        "console",
        lambda message: message.type == "error" and walk.errors.append(message.text),
    )
    _sign_in(page, base, email)
    page.wait_for_url(f"{base}/")
    return walk
