"""Notifications left before their source was stored: find it again from the French text.

Each known message is matched against its French translation (the portal's language, which
those rows were written in), its placeholders read back as parameters; a matched row then
reads in each reader's language like a new one. A row that matches nothing keeps its stored
text, shown as it is. The list is frozen here: later changes of the code do not change what
this migration did.
"""

import re

from django.db import migrations
from django.utils import translation

PLACEHOLDER = re.compile(r"%\((\w+)\)([sd])")

# (the English source today, the English sources the French text may come from, plural pairs
# being older sources whose French singular and plural forms both count).
KNOWN = [
    ("A decision of %(committee)s is available.", []),
    ("%(by)s removed you from a patient's care team.", []),
    ("Image import finished: %(stored)d stored, %(refused)d refused.", []),
    (
        "Reminder: %(committee)s meets on %(date)s; cases on the agenda: %(count)s.",
        [
            (
                "Reminder: %(committee)s meets on %(date)s, %(count)s case on the agenda.",
                "Reminder: %(committee)s meets on %(date)s, %(count)s cases on the agenda.",
            )
        ],
    ),
    (
        "Agenda of %(committee)s on %(date)s; cases: %(count)s.",
        [
            (
                "Agenda of %(committee)s on %(date)s: %(count)s case.",
                "Agenda of %(committee)s on %(date)s: %(count)s cases.",
            )
        ],
    ),
    ("Tele-expertise request no. %(number)s (%(specialty)s) is addressed to you.", []),
    ("New tele-expertise request no. %(number)s in your pool (%(specialty)s).", []),
    ("Tele-expertise request no. %(number)s was cancelled by the requester.", []),
    ("Your tele-expertise request no. %(number)s was accepted by %(expert)s.", []),
    ("Tele-expertise request no. %(number)s is back in your pool's queue.", []),
    ("Your tele-expertise request no. %(number)s was declined: see the reason.", []),
    ("The expert needs more information on your tele-expertise request no. %(number)s.", []),
    ("New message on tele-expertise request no. %(number)s.", []),
    ("A live review of the images of tele-expertise request no. %(number)s is open.", []),
    ("Tele-expertise request no. %(number)s is due soon (%(specialty)s).", []),
    ("Tele-expertise request no. %(number)s is overdue: no answer within the delay.", []),
    ("The report of tele-expertise request no. %(number)s is available.", []),
]


def _pattern(french: str) -> re.Pattern:
    parts, last = [], 0
    for match in PLACEHOLDER.finditer(french):
        parts.append(re.escape(french[last : match.start()]))
        name, kind = match.groups()
        parts.append(rf"(?P<{name}>\d+)" if kind == "d" else rf"(?P<{name}>.+?)")
        last = match.end()
    parts.append(re.escape(french[last:]))
    return re.compile("".join(parts), re.DOTALL)


def _patterns():
    """(pattern, today's source), from the French catalogue."""
    with translation.override("fr"):
        for msgid, older in KNOWN:
            yield _pattern(translation.gettext(msgid)), msgid
            for singular, plural in older:
                for count in (1, 2):
                    yield _pattern(translation.ngettext(singular, plural, count)), msgid


def _specialties() -> dict:
    """French specialty label -> its English source, for the "(specialty)" parameters."""
    from portal.models import Specialty

    labels = {}
    for value in Specialty.values:
        label = Specialty(value).label
        with translation.override(None):
            english = str(label)
        with translation.override("fr"):
            labels[str(label)] = english
    return labels


def find_sources(apps, schema_editor):
    Notification = apps.get_model("portal", "Notification")
    patterns = list(_patterns())
    specialties = _specialties()
    for notification in Notification.objects.filter(msgid="").iterator():
        for pattern, msgid in patterns:
            match = pattern.fullmatch(notification.message)
            if match is None:
                continue
            params = {}
            for name, value in match.groupdict().items():
                if name in ("stored", "refused", "count"):
                    params[name] = int(value)
                elif name == "specialty" and value in specialties:
                    params[name] = {"msgid": specialties[value]}
                else:
                    params[name] = value
            Notification.objects.filter(pk=notification.pk).update(msgid=msgid, params=params)
            break


class Migration(migrations.Migration):
    dependencies = [("portal", "0005_notification_source")]

    operations = [migrations.RunPython(find_sources, migrations.RunPython.noop)]
