"""The RCP coordinator's walk (Julie Perrin, j.perrin@mirc.test) at the pilot's two screen
sizes: she sends the agenda of today's thoracic session, reads "Ordre du jour envoyé le … par
…", sends it again and meets the confirmation first, then confirms; the members' e-mails list
each case by the patient's initials and question, the second says it is an update, and every
link in them leads to the portal's address.

The demo here is served with PORTAL_URL set to its own address and the e-mails written to
files (Django's file backend), read back as the members' mailboxes would. Each size starts
from an agenda never sent.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from tests.browser_walk import SIZES, open_as
from tests.demo_seed import demo_env, manager
from tests.test_demo_browser import ROOT, _free_port, browser  # noqa: F401 (fixture)
from tests.waiting import wait_until

pytestmark = pytest.mark.service("chromium")

COORDINATOR = "j.perrin@mirc.test"
LINK = re.compile(r"https?://[^\s<>\"')\]]+")

FACTS = """
import json
from django.utils import timezone
from rcp.models import Session
from rcp.notifications import patient_initials
session = (
    Session.objects.filter(
        status="planned", starts_at__gt=timezone.now(), cases__isnull=False,
        committee__members__user__email="j.perrin@mirc.test",
    ).distinct().order_by("starts_at").first()
)
cases = list(session.cases.select_related("patient").order_by("agenda_position", "pk"))
from rcp.notifications import committee_members
print(json.dumps({
    "session": session.pk,
    "recipients": sum(
        1 for u in committee_members(session.committee)
        if u.email and u.email != "j.perrin@mirc.test"
    ),
    "video": session.video_url,
    "cases": [
        {"initials": patient_initials(c.patient), "question": " ".join(c.question.split())}
        for c in cases
    ],
    "traces": [t for c in cases for t in (
        c.patient.birth_name, c.patient.used_name, *c.patient.first_names.split(),
        c.patient.birth_date.strftime("%d/%m/%Y"), c.patient.ins_matricule,
    ) if t],
}))
"""

NEVER_SENT = """
from rcp.models import Session
Session.objects.filter(pk={pk}).update(
    agenda_sendings=0, agenda_sent_at=None, agenda_sent_by=None
)
"""


@pytest.fixture(scope="module")
def agenda_demo(seeded_demo, tmp_path_factory):
    """daphne serving a copy of the seeded demo, PORTAL_URL its own address, e-mails in files."""
    workdir = tmp_path_factory.mktemp("walk-agenda") / "portal"
    shutil.copytree(seeded_demo, workdir)
    outbox = workdir / "outbox"
    outbox.mkdir()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**demo_env(workdir), "PORTAL_URL": base, "EMAIL_URL": f"filemail:///{outbox}"}
    manage = manager(env)
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["portal.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                pytest.fail("daphne did not start: " + server.stderr.read1().decode())
            try:
                urllib.request.urlopen(f"{base}/health/", timeout=1).close()  # noqa: S310
            except OSError:
                return False
            return True

        wait_until(healthy, timeout=30, what="daphne to answer /health/")
        yield base, manage, outbox
    finally:
        server.terminate()
        server.wait(timeout=10)


def _mails(outbox, *, besides=frozenset()) -> list:
    """Every message the file backend wrote (one file per connection, several messages), but
    those of the files in ``besides``. File names carry the second and a random number, so
    their order is not the order of sending: a later sending is told by its new files."""
    messages = []
    for path in sorted(set(outbox.iterdir()) - set(besides)):
        for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if chunk.strip():
                messages.append(email.message_from_bytes(chunk, policy=email.policy.default))
    return messages


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


@pytest.mark.parametrize("size", list(SIZES))
def test_the_coordinator_sends_the_agenda_then_an_update(agenda_demo, browser, size):  # noqa: F811
    base, manage, outbox = agenda_demo
    facts = json.loads(manage("shell", "-c", FACTS).stdout.strip().splitlines()[-1])
    manage("shell", "-c", NEVER_SENT.format(pk=facts["session"]))
    for path in outbox.iterdir():
        path.unlink()
    assert facts["cases"], "the demo puts a case on today's thoracic agenda"

    walk = open_as(browser, base, COORDINATOR, role="coordinator-agenda", size=size)
    page = walk.page
    try:
        walk.goto(f"/rcp/seances/{facts['session']}/")
        walk.shot("session")
        walk.assert_fits_width("the session page")
        assert page.get_by_test_id("agenda-sent").count() == 0

        # First sending: no question asked.
        page.get_by_test_id("send-agenda").click()
        sent = page.get_by_test_id("agenda-sent")
        sent.wait_for()
        line = sent.inner_text()
        assert re.search(r"Ordre du jour envoyé le \d\d/\d\d/\d{4} \d\d:\d\d par .*Perrin", line)
        walk.shot("agenda-sent")
        walk.assert_fits_width("the session page after sending")

        # Every member but the sender, in one background task writing one file: wait for all.
        walk.wait_until(
            lambda: len(_mails(outbox)) == facts["recipients"], what="the agenda e-mails"
        )
        first_files = set(outbox.iterdir())
        first = _mails(outbox)
        for message in first:
            body = _text(message)
            assert "Ordre du jour" in message["Subject"]
            assert "Mise à jour" not in message["Subject"]
            for case in facts["cases"]:
                assert f"{case['initials']}: {case['question']}" in body
            if facts["video"]:
                assert facts["video"] in body
            for trace in facts["traces"]:
                assert trace.lower() not in (message["Subject"] + body).lower(), trace
            for link in LINK.findall(body):
                assert link == facts["video"] or link.startswith(base + "/"), link

        # Again: the question comes first, and nothing leaves.
        page.get_by_test_id("send-agenda").click()
        confirm = page.get_by_test_id("agenda-confirm")
        confirm.wait_for()
        assert "Envoyer une mise à jour de l'ordre du jour ?" in confirm.inner_text()
        assert "Ordre du jour envoyé le" in confirm.inner_text()
        walk.shot("confirm-update")
        walk.assert_fits_width("the confirmation")
        assert len(_mails(outbox)) == len(first)

        page.get_by_test_id("confirm-send-agenda").click()
        page.wait_for_url(f"{base}/rcp/seances/{facts['session']}/")
        walk.wait_until(
            lambda: len(_mails(outbox, besides=first_files)) == len(first),
            what="the update e-mails",
        )
        updates = _mails(outbox, besides=first_files)
        for message in updates:
            body = _text(message)
            assert "Mise à jour de l'ordre du jour" in message["Subject"]
            assert "Mise à jour de l'ordre du jour" in body
            for case in facts["cases"]:
                assert f"{case['initials']}: {case['question']}" in body
        walk.shot("update-sent")
        walk.assert_fits_width("the session page after the update")
        assert not walk.errors, walk.errors
    finally:
        walk.close()
