"""Each room's link moves down to its case (see 0005); on its own, as PostgreSQL
refuses to change a table's columns while rows written in the same transaction still wait on
their foreign-key checks."""

from django.db import migrations


def links_move_down(apps, schema_editor):
    Case = apps.get_model("rcp", "Case")
    ReviewRoom = apps.get_model("imaging", "ReviewRoom")
    for room_id, case_id in ReviewRoom.objects.filter(rcp_case__isnull=False).values_list(
        "pk", "rcp_case_id"
    ):
        Case.objects.filter(pk=case_id).update(review_room_id=room_id)


def links_move_up(apps, schema_editor):
    Case = apps.get_model("rcp", "Case")
    ReviewRoom = apps.get_model("imaging", "ReviewRoom")
    for case_id, room_id in Case.objects.filter(review_room__isnull=False).values_list(
        "pk", "review_room_id"
    ):
        ReviewRoom.objects.filter(pk=room_id).update(rcp_case_id=case_id)


class Migration(migrations.Migration):
    dependencies = [
        ("rcp", "0005_case_review_room"),
    ]

    operations = [
        migrations.RunPython(links_move_down, links_move_up, elidable=False),
    ]
