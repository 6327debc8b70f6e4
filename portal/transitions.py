"""The guarded state transition shared by the apps' life cycles (an RCP case, a tele-expertise
request; the review rooms may adopt it).

One step, in one transaction: the transition is allowed from the state the caller read, one
UPDATE conditioned on that state (and on whatever else the caller saw, ``expect``) moves the
state, bumps the revision and writes only the named columns, then the app's timeline entry and
the audit event on the patient's record. Two people acting at once: one UPDATE matches, the
other matches nothing and is refused as stale; an audit that fails undoes the move.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.db import models, transaction
from django.db.models import F

from portal import audit
from portal.audit import Actor


def move(
    obj: models.Model,
    to: str,
    *,
    transitions: Mapping[str, set[str]],
    by: Actor,
    purpose: str,
    audit_detail: Callable[[str], dict],
    refused: Callable[[], Exception],
    stale: Callable[[], Exception],
    changes: dict | None = None,
    expect: dict | None = None,
    moved: Callable[[str], None] | None = None,
):
    """Move ``obj`` (a model with ``state``, ``revision`` and ``patient``) to ``to``.

    ``refused()`` is raised when ``to`` is not reachable from the state read, ``stale()`` when
    the row changed meanwhile (nothing is written then). ``moved(before)`` runs in the
    transaction once the row is updated and reloaded (the app's timeline, caches to forget);
    ``audit_detail(before)`` is the audit event's detail. Returns ``obj``, reloaded.
    """
    if to not in transitions[obj.state]:
        raise refused()
    before = obj.state
    with transaction.atomic():
        updated = (
            type(obj)
            ._default_manager.filter(pk=obj.pk, state=before, **(expect or {}))
            .update(state=to, revision=F("revision") + 1, **(changes or {}))
        )
        if not updated:
            raise stale()
        obj.refresh_from_db()
        if moved is not None:
            moved(before)
        audit.record_patient_change(actor=by, obj=obj, purpose=purpose, detail=audit_detail(before))
    return obj
