"""The guarded change shared by the apps: an RCP case's and a tele-expertise request's life
cycles (:func:`move`), the live review rooms (imaging.review, :func:`guarded_update`).

One step, in one transaction: one UPDATE conditioned on what the caller read (``expect``)
writes only the named columns, then what goes with the change (the app's timeline entry, the
audit event on the patient's record) is written. Two people acting at once: one UPDATE
matches, the other matches nothing and writes nothing; an audit that fails undoes the change.
:func:`move` adds the life cycle: the transition must be allowed from the state read, the
state and the revision move, and a change that matched nothing is refused as stale.
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

    def written() -> None:
        obj.refresh_from_db()
        if moved is not None:
            moved(before)
        audit.record_patient_change(actor=by, obj=obj, purpose=purpose, detail=audit_detail(before))

    if not guarded_update(
        type(obj),
        obj.pk,
        expect={"state": before, **(expect or {})},
        changes={"state": to, "revision": F("revision") + 1, **(changes or {})},
        then=written,
    ):
        raise stale()
    return obj


def guarded_update(
    model: type[models.Model],
    pk,
    *,
    changes: dict,
    expect: dict | None = None,
    where=None,
    then: Callable[[], None] | None = None,
) -> bool:
    """Write ``changes`` on row ``pk`` of ``model`` if it still holds what ``expect`` says
    (lookups, as in ``filter``) and ``where`` (a boolean expression, e.g. ``~Exists(…)``, for
    what lookups cannot say); True if it did.

    ``then()`` runs once the row is written, in the same transaction: what it writes (the
    audit event) and the change are kept or undone together, and it does not run when the row
    did not match. Without it the UPDATE alone is one statement, atomic by itself, and no
    transaction is opened (no more round trips than the UPDATE, on the review's control path).
    """
    rows = model._default_manager.filter(pk=pk, **(expect or {}))
    if where is not None:
        rows = rows.filter(where)
    if then is None:
        return bool(rows.update(**changes))
    with transaction.atomic():
        if not rows.update(**changes):
            return False
        then()
    return True
