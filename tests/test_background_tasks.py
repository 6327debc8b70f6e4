"""The demo's server runs Celery tasks after the response, in a background thread
(portal/background.py), instead of inside the request that sends them.

The tests enable that mode as ``python -m portal.logging`` (``make demo``) does, send tasks
with ``.delay()`` as the services do (after the commit), and check that the caller does not
wait for them, that they still run and their result lands in the database, and that a
failing task does not stop the ones after it.
"""

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction

from portal import background, task_queue
from portal.celery import app
from portal.models import Establishment
from tests.waiting import async_wait_until

ROOT = Path(__file__).resolve().parent.parent

# What the test tasks see and do, keyed by the test's marker.
_gates: dict[str, threading.Event] = {}
_runs: dict[str, list[int]] = {}


@app.task(bind=True, name="tests.background.rename", max_retries=2)
def rename_establishment(self, establishment_id: int, name: str, marker: str) -> None:
    """Waits for the test's gate, then renames the establishment (a database write)."""
    gate = _gates.get(marker)
    if gate is not None and not gate.wait(timeout=30):
        raise TimeoutError("the test never opened the gate")
    _runs.setdefault(marker, []).append(self.request.retries)
    Establishment.objects.filter(pk=establishment_id).update(name=name)


@app.task(bind=True, name="tests.background.flaky", max_retries=3)
def flaky(self, marker: str, failures: int) -> None:
    """Fails ``failures`` times with a retry, then succeeds."""
    _runs.setdefault(marker, []).append(self.request.retries)
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError("archive busy"), countdown=30)


@app.task(name="tests.background.broken")
def broken(marker: str) -> None:
    _runs.setdefault(marker, []).append(0)
    raise ValueError("a bug in the task")


@pytest.fixture
def in_background(settings):
    """The demo server's mode: tasks go to the background thread."""
    settings.TASKS_IN_BACKGROUND = True
    background.enable()
    yield
    background.disable()
    assert background.wait_idle(timeout=30), "background tasks still running after the test"


def _establishment(name: str) -> Establishment:
    return Establishment.objects.create(name=name, finess=f"99{abs(hash(name)) % 10**7:07d}")


@pytest.mark.django_db(transaction=True)
def test_the_caller_does_not_wait_for_the_task_which_runs_after_the_commit(in_background):
    marker = "after-commit"
    _gates[marker] = threading.Event()
    place = _establishment("Clinique du Val")
    with transaction.atomic():
        transaction.on_commit(
            lambda: rename_establishment.delay(place.pk, "Clinique du Val (renommée)", marker)
        )
    # The commit is done and .delay() has returned, while the task waits for its gate: the
    # request that sent it would have answered already.
    assert marker not in _runs
    place.refresh_from_db()
    assert place.name == "Clinique du Val"

    _gates[marker].set()
    # Wait for the thread, then read: on the tests' in-memory SQLite (shared cache) a read
    # polled while the task writes makes its UPDATE fail at once with "table is locked".
    assert background.wait_idle(timeout=20), "the task did not finish"
    assert Establishment.objects.get(pk=place.pk).name.endswith("(renommée)")
    assert _runs[marker] == [0]


@pytest.mark.django_db(transaction=True)
def test_tasks_run_in_order_and_a_broken_one_does_not_stop_the_next(in_background, caplog):
    marker = "order"
    place = _establishment("Centre de santé des Aubrais")
    broken.delay(marker)
    rename_establishment.delay(place.pk, "Centre de santé des Aubrais (2)", marker)
    assert background.wait_idle(timeout=20)
    assert _runs[marker] == [0, 0]  # the broken task ran, then the next one
    assert Establishment.objects.get(pk=place.pk).name.endswith("(2)")
    assert any("tests.background.broken" in record.getMessage() for record in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_a_task_asking_for_a_retry_is_run_again_until_it_succeeds(in_background):
    marker = "retry"
    flaky.delay(marker, 2)
    assert background.wait_idle(timeout=20)
    assert _runs[marker] == [0, 1, 2]


def test_without_the_demo_server_tasks_still_run_inline():
    """Tests, seed_demo and the shell keep Celery's eager mode: the effect is there at once."""
    marker = "inline"
    assert not background.enabled()
    flaky.delay(marker, 0)
    assert _runs[marker] == [0]


@app.task(name="tests.background.which_loop")
def which_loop(marker: str) -> None:
    """Records the event loop that async code called from the task runs on (a live
    notification's group_send goes through async_to_sync like this)."""

    async def running():
        return asyncio.get_running_loop()

    _loops[marker] = async_to_sync(running)()


_loops: dict[str, asyncio.AbstractEventLoop] = {}


@pytest.mark.asyncio
async def test_a_task_sent_by_a_request_reaches_the_servers_event_loop(settings):
    """Live notifications (the PDF is ready) go through the server's in-memory channel layer:
    a task sent from a request's thread runs its async calls on the server's loop."""
    marker = "loop"
    settings.TASKS_IN_BACKGROUND = True
    background.enable()
    try:
        # A view's code runs in a thread under sync_to_async, as here.
        await sync_to_async(which_loop.delay)(marker)
        await async_wait_until(lambda: marker in _loops, timeout=20, what="the task to run")
    finally:
        background.disable()
    assert _loops.get(marker) is asyncio.get_running_loop()


@pytest.mark.django_db(transaction=True)
def test_validating_a_decision_answers_before_its_fiche_is_made_which_then_appears(
    world, settings, monkeypatch
):
    """The request that validates does not wait for WeasyPrint; the fiche is made after it."""
    from django.urls import reverse

    from portal import documents
    from portal.audit import Actor
    from rcp import services
    from rcp.models import Case, RcpDocument
    from tests.conftest import client_for
    from tests.rcp_world import case_on_agenda, open_with_quorum

    gate = threading.Event()
    render = documents.render

    def render_when_allowed(*, document):
        assert gate.wait(timeout=30), "the test never let the fiche be made"
        return render(document=document)

    monkeypatch.setattr(documents, "render", render_when_allowed)
    case = case_on_agenda(world)
    open_with_quorum(world)
    draft = services.decision_save(
        case=case,
        revision=None,
        by=Actor(user=world.oncologist.user),
        proposal="Lobectomie supérieure droite avec curage.",
        treatment_types=["387713003"],
        conforms_to_guideline=True,
    )
    # The demo server's mode from here (the world's set-up ran its imports inline).
    settings.TASKS_IN_BACKGROUND = True
    background.enable()
    try:
        chair = client_for(world.oncologist.user)
        response = chair.post(
            reverse("rcp-case-validate", args=[case.pk]), {"revision": draft.revision}
        )
        # Answered, validated, while the fiche is still waiting for the gate.
        assert response.status_code == 302
        case.refresh_from_db()
        assert case.state == Case.State.VALIDATED
        fiche = RcpDocument.objects.get(decision__case=case)
        assert fiche.status != RcpDocument.Status.READY
    finally:
        gate.set()
        background.disable()
        # The tests' in-memory SQLite locks a table while another thread writes to it: the
        # background thread finishes before this one reads again.
        assert background.wait_idle(timeout=60)
    fiche.refresh_from_db()
    assert fiche.status == RcpDocument.Status.READY
    # The case's page (its outputs panel polls while a PDF is in flight) offers the fiche.
    page = chair.get(reverse("rcp-case", args=[case.pk])).content.decode()
    assert reverse("rcp-case-pdf", args=[case.pk, fiche.pk]) in page


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_by_its_name_goes_to_the_background_thread_after_the_commit(in_background):
    """Services send their tasks by name (portal.task_queue), through the same ``.delay``."""
    marker = "by-name"
    _gates[marker] = threading.Event()
    place = _establishment("Clinique des Tilleuls")
    with transaction.atomic():
        task_queue.enqueue_on_commit(
            "tests.background.rename", place.pk, "Clinique des Tilleuls (renommée)", marker
        )
        assert marker not in _runs
    _gates[marker].set()
    # Wait for the thread, then read: on the tests' in-memory SQLite (shared cache) a read
    # polled while the task writes makes its UPDATE fail at once with "table is locked".
    assert background.wait_idle(timeout=20), "the task did not finish"
    assert Establishment.objects.get(pk=place.pk).name.endswith("(renommée)")
    assert _runs[marker] == [0]


def test_a_web_process_finds_a_task_by_name_that_nothing_imported_and_refuses_a_wrong_one():
    """A worker loads every tasks module when it starts; a web process, where no module
    imports one, loads them when a name is first asked for."""
    script = (
        "import sys, django\n"
        "django.setup()\n"
        "from portal import task_queue\n"
        "assert 'imaging.tasks' not in sys.modules\n"
        "print(task_queue.task_named('imaging.ingest_batch').name)\n"
        "try:\n"
        "    task_queue.task_named('imaging.no_such_task')\n"
        "except task_queue.UnknownTask as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "imaging.ingest_batch",
        "No Celery task is registered as 'imaging.no_such_task'.",
    ]
