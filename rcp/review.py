"""The live review room of an RCP case: the case owns it (``Case.review_room``), imaging opens
and moves it (imaging.review), and rcp.apps tells imaging who may join and who hands control
over."""

from django.db import transaction
from django.db.models import Subquery

from imaging.models import ReviewRoom, Study
from imaging.review import review_room_move, review_room_open
from rcp.models import Case


def case_review_room(*, case: Case, study: Study) -> ReviewRoom:
    """The case's room, made on first use, showing ``study``.

    Two members opening the live page at once may both make a room: the case is linked to
    one by a guarded UPDATE, the other is rolled back, and both land in the same room."""
    room = _room_of(case)
    if room is None:
        with transaction.atomic():
            opened = review_room_open(
                study=study, title=str(case.committee), coordinator=case.submitted_by, by=None
            )
            claimed = Case.objects.filter(pk=case.pk, review_room__isnull=True).update(
                review_room=opened
            )
            if not claimed:
                transaction.set_rollback(True)
        room = opened if claimed else _room_of(case)
    case.review_room = room
    return review_room_move(room=room, study=study)


def _room_of(case: Case) -> ReviewRoom | None:
    owned = Case.objects.filter(pk=case.pk).values("review_room_id")
    return ReviewRoom.objects.filter(pk=Subquery(owned)).first()
