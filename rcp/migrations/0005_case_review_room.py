"""An RCP case owns its review room: the link moves from ReviewRoom.rcp_case (imaging pointing
up at rcp) to Case.review_room; rcp.0006 copies the links, imaging.0008 drops the old column."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("imaging", "0007_prefetch"),
        ("rcp", "0004_session_lifecycle"),
    ]

    operations = [
        migrations.AddField(
            model_name="case",
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
