"""Review rooms no longer point up at rcp and expertise: the case or request that opened a room
now points to it (rcp.0006, expertise.0003 move the links first), and the old columns go."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("imaging", "0007_prefetch"),
        # The links are copied to the case and the request before their columns are dropped.
        ("rcp", "0006_case_review_room_links"),
        ("expertise", "0003_request_review_room_links"),
    ]

    operations = [
        migrations.RemoveField(model_name="reviewroom", name="expertise_request"),
        migrations.RemoveField(model_name="reviewroom", name="rcp_case"),
    ]
