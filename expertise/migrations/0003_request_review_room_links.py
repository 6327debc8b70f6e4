"""Each room's link moves down to its request (see 0002); on its own, as PostgreSQL
refuses to change a table's columns while rows written in the same transaction still wait on
their foreign-key checks."""

from django.db import migrations


def links_move_down(apps, schema_editor):
    Request = apps.get_model("expertise", "Request")
    ReviewRoom = apps.get_model("imaging", "ReviewRoom")
    for room_id, request_id in ReviewRoom.objects.filter(
        expertise_request__isnull=False
    ).values_list("pk", "expertise_request_id"):
        Request.objects.filter(pk=request_id).update(review_room_id=room_id)


def links_move_up(apps, schema_editor):
    Request = apps.get_model("expertise", "Request")
    ReviewRoom = apps.get_model("imaging", "ReviewRoom")
    for request_id, room_id in Request.objects.filter(review_room__isnull=False).values_list(
        "pk", "review_room_id"
    ):
        ReviewRoom.objects.filter(pk=room_id).update(expertise_request_id=request_id)


class Migration(migrations.Migration):
    dependencies = [
        ("expertise", "0002_request_review_room"),
    ]

    operations = [
        migrations.RunPython(links_move_down, links_move_up, elidable=False),
    ]
