"""A tele-expertise request owns its review room: the link moves from
ReviewRoom.expertise_request (imaging pointing up at expertise) to Request.review_room;
expertise.0003 copies the links, imaging.0008 drops the old column."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("expertise", "0001_expertise_core"),
        ("imaging", "0007_prefetch"),
    ]

    operations = [
        migrations.AddField(
            model_name="request",
            name="review_room",
            field=models.OneToOneField(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="imaging.reviewroom",
            ),
        ),
    ]
