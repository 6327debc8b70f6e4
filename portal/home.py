"""The home page by role: the panels the apps contribute, and the GP's news.

portal is the lowest layer: the home cannot import rcp, expertise or imaging. They contribute
to it through two registries, filled from their ``AppConfig.ready()``:

* **panels** — :func:`register_panel`: ``build(request)`` returns the panel's context, or None
  when the panel does not apply to the user. The home shows the panels that apply, by
  ``order`` (the coordinator's worklist first), above the tiles everyone has.
* **news** — :func:`register_news`: ``fetch(user=, patients=, since=, limit=)`` returns the
  :class:`NewsItem` of the GP's patients that the app knows of (validated RCP decisions,
  tele-expertise reports, new studies and study reports). The GP's news panel, portal's own,
  merges them.

Every ``build`` and ``fetch`` runs a constant number of SQL queries, whatever the number of
committees, cases or patients: the home is the page everybody opens first.

**Read or unread** (the GP's news). An item is *read* when any of these holds, else *unread*:

1. the notification that told him about it — his first portal notification with the same link
   left when the item appeared or later — is marked read;
2. he opened it since it appeared: his audit trail holds a successful read, by him, of the
   object the item stands for (the case, the request, the study, the report: every page that
   shows patient data writes one);
3. he marked the news read since it appeared (the panel's button, kept in the audit trail as
   his acknowledgement; it marks the notifications of the items shown read too).

So an item that no notification announces (a new study) stays unread until he opens it or
marks the news read. Unread items come first, the newest first within each group; a source
may cap how many of its items are shown (the studies of an import arrive by the dozen).

**The GP's working page** (:func:`gp_items`, portal.views_gp_home) shows the same items,
read or unread alike, the newest first, page by page and without caps, for all his patients
or those his search found.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Max
from django.utils import timezone

from portal import audit
from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditOutcome,
    AuditPurpose,
    Notification,
    Patient,
)
from portal.selectors import patients_followed_as_gp

# --- Panels ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    key: str
    order: int
    template: str
    build: Callable  # (request) -> dict | None
    # Whether the panel shows patients (names, cases): the home then audits its reading.
    patient_data: bool = True


@dataclass(frozen=True)
class ShownPanel:
    key: str
    template: str
    context: dict
    patient_data: bool


_panels: dict[str, Panel] = {}


def register_panel(
    *, key: str, order: int, template: str, build: Callable, patient_data: bool = True
) -> None:
    """Add a home panel (registering a key again replaces it: ``ready()`` may run twice)."""
    _panels[key] = Panel(
        key=key, order=order, template=template, build=build, patient_data=patient_data
    )


def panels_for(request) -> list[ShownPanel]:
    """The panels that apply to ``request.user``, in their order."""
    shown = []
    for panel in sorted(_panels.values(), key=lambda p: (p.order, p.key)):
        context = panel.build(request)
        if context is not None:
            shown.append(
                ShownPanel(
                    key=panel.key,
                    template=panel.template,
                    context=context,
                    patient_data=panel.patient_data,
                )
            )
    return shown


def audit_home_read(request, panels: list[ShownPanel]) -> None:
    """One query event when the home showed patients (none for the tiles alone)."""
    keys = [panel.key for panel in panels if panel.patient_data]
    if keys:
        audit.record_query(request, object_type="portal.home", query="home: " + ", ".join(keys))


# --- The GP's news ------------------------------------------------------------------------------

# What "new" means on the home: the last weeks, the latest items.
NEWS_WINDOW = dt.timedelta(days=90)
NEWS_SHOWN = 20
# A notification is left in the transaction that makes the item, a moment after its date.
NOTIFICATION_SLACK = dt.timedelta(minutes=1)
# The GP's "mark the news read", as the audit trail keeps it.
NEWS_OBJECT = "portal.home_news"
NEWS_MARKED_READ = "news marked read"


@dataclass
class NewsItem:
    """Something new about one of the GP's patients."""

    kind: str  # a stable key: "rcp-decision", "expertise-report", "study", "study-report"
    label: str  # what it is, for the reader
    title: str
    patient: Patient
    at: dt.datetime
    url: str
    # The audited object whose reading means he opened it: (object_type, object_id).
    seen_as: tuple[str, str]
    unread: bool = field(default=True)
    # The notification that told him about it, if one did.
    notification_id: int | None = None
    # The key of the source that gave it (register_news).
    source: str = ""
    # One click to the images: the study's viewer (studies and their reports), and the
    # study's report when one came with it.
    viewer_url: str = ""
    report_url: str = ""


_news: dict[str, tuple[Callable, int | None]] = {}


def register_news(*, key: str, fetch: Callable, max_shown: int | None = None) -> None:
    """Add a source of the GP's news: ``fetch(user=, patients=, since=, limit=)`` returns
    NewsItems newest first, at most ``limit``, in a constant number of queries. ``patients``
    is a queryset of patient ids (his patients, or those his search found); an item of a
    study fills ``viewer_url`` (and ``report_url`` when the study has a report).

    ``max_shown`` caps how many of its items the panel shows: the studies of one import
    (a dozen at once) would otherwise push the decisions and reports out of it."""
    _news[key] = (fetch, max_shown)


def gp_news(user, *, now: dt.datetime | None = None, limit: int = NEWS_SHOWN) -> list[NewsItem]:
    """What is new for the patients ``user`` is the current GP of: unread first, then the
    newest first (see the module's docstring for what *read* means)."""
    now = now or timezone.now()
    since = now - NEWS_WINDOW
    patients = patients_followed_as_gp(user).values("pk")
    items: list[NewsItem] = []
    caps: dict[str, int | None] = {}
    for key in sorted(_news):
        fetch, caps[key] = _news[key]
        for item in fetch(user=user, patients=patients, since=since, limit=limit):
            item.source = key
            items.append(item)
    if not items:
        return []
    _mark_unread(user, items)
    items.sort(key=lambda item: item.at, reverse=True)
    items.sort(key=lambda item: not item.unread)  # stable: the newest first within each group
    shown, per_source = [], dict.fromkeys(caps, 0)
    for item in items:
        cap = caps[item.source]
        if cap is not None and per_source[item.source] >= cap:
            continue
        per_source[item.source] += 1
        shown.append(item)
    return shown[:limit]


# --- The GP's working page (all the items of his patients, page by page) --------------------------

# The working page goes further back than the home's panel: it is where he looks a result up.
GP_WINDOW = dt.timedelta(days=365)
GP_PAGE_SIZE = 20
# Deeper pages cost a longer read of each source: past this one, the search is the way.
GP_MAX_PAGE = 50


@dataclass
class ItemsPage:
    items: list[NewsItem]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def unread_count(self) -> int:
        return sum(1 for item in self.items if item.unread)


def gp_items(
    user,
    *,
    patients=None,
    page: int = 1,
    per_page: int = GP_PAGE_SIZE,
    now: dt.datetime | None = None,
) -> ItemsPage:
    """The items of the patients ``user`` is the GP of (or of ``patients``, a queryset of
    their ids, among them: his search), the newest first, one page: each source is read once
    (``page * per_page + 1`` rows at most) and the read marks once, whatever the number of
    items. Unlike the home's panel no source is capped: this is his whole list."""
    now = now or timezone.now()
    page = min(max(page, 1), GP_MAX_PAGE)
    if patients is None:
        patients = patients_followed_as_gp(user).values("pk")
    end = page * per_page
    items: list[NewsItem] = []
    for key in sorted(_news):
        fetch, _cap = _news[key]
        for item in fetch(user=user, patients=patients, since=now - GP_WINDOW, limit=end + 1):
            item.source = key
            items.append(item)
    items.sort(key=lambda item: (item.at, item.source, item.url), reverse=True)
    shown = items[end - per_page : end]
    if shown:
        _mark_unread(user, shown)
    return ItemsPage(items=shown, number=page, has_next=len(items) > end)


def _first_notifications(user, items: list[NewsItem]) -> dict[int, Notification]:
    """For each item (by its index), the notification that told ``user`` about it."""
    oldest = min(item.at for item in items) - NOTIFICATION_SLACK
    by_url: dict[str, list[Notification]] = {}
    for notification in Notification.objects.filter(
        recipient=user, url__in={item.url for item in items}, created_at__gte=oldest
    ).order_by("created_at", "pk"):
        by_url.setdefault(notification.url, []).append(notification)
    found = {}
    for index, item in enumerate(items):
        for notification in by_url.get(item.url, []):
            if notification.created_at >= item.at - NOTIFICATION_SLACK:
                found[index] = notification
                break
    return found


def news_marked_read_at(user) -> dt.datetime | None:
    return (
        AuditEvent.objects.filter(actor=user, object_type=NEWS_OBJECT, query=NEWS_MARKED_READ)
        .order_by("-occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )


def _mark_unread(user, items: list[NewsItem]) -> None:
    notified = _first_notifications(user, items)
    # When he last opened each object (the reads of his trail since the oldest item).
    reads = (
        AuditEvent.objects.filter(
            actor=user,
            action=AuditAction.READ,
            outcome=AuditOutcome.SUCCESS,
            occurred_at__gte=min(item.at for item in items),
            object_type__in={item.seen_as[0] for item in items},
            object_id__in={item.seen_as[1] for item in items},
        )
        .order_by()  # no ordering column in the GROUP BY
        .values_list("object_type", "object_id")
        .annotate(last=Max("occurred_at"))
    )
    opened = {(object_type, object_id): last for object_type, object_id, last in reads}
    marked_at = news_marked_read_at(user)
    for index, item in enumerate(items):
        notification = notified.get(index)
        last_opened = opened.get(item.seen_as)
        item.unread = not (
            (notification is not None and notification.read_at is not None)
            or (last_opened is not None and last_opened >= item.at)
            or (marked_at is not None and marked_at >= item.at)
        )
        item.notification_id = notification.pk if notification is not None else None


def news_mark_read(request) -> int:
    """The GP marks his news read: the notifications of the items shown are marked read, and
    the moment is kept (his audit trail) for the items no notification announced. Returns
    how many items were unread."""
    from portal.services import notification_mark_read

    items = gp_news(request.user)
    unread = [item for item in items if item.unread]
    ids = [item.notification_id for item in unread if item.notification_id]
    if ids:
        notification_mark_read(user=request.user, notification_ids=ids)
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.UPDATE,
        object_type=NEWS_OBJECT,
        purpose=AuditPurpose.CARE,
        query=NEWS_MARKED_READ,
        detail={"unread": len(unread)},
    )
    return len(unread)


def _gp_news_panel(request) -> dict | None:
    if not patients_followed_as_gp(request.user).exists():
        return None
    items = gp_news(request.user)
    return {
        "items": items,
        "unread_count": sum(1 for item in items if item.unread),
        "links": [link for _order, link in sorted(_news_links.values(), key=lambda x: x[0])],
    }


# Pages the news panel links to (the GP's list of his patients' RCP decisions), added by the
# apps that own them: (order, {"label":, "url_name":}).
_news_links: dict[str, tuple[int, dict]] = {}


def register_news_link(*, key: str, order: int, label, url_name: str) -> None:
    _news_links[key] = (order, {"label": label, "url_name": url_name})


def register_portal_panels() -> None:
    register_panel(
        key="gp_news",
        order=20,
        template="portal/home_news.html",
        build=_gp_news_panel,
    )


__all__ = [
    "NEWS_SHOWN",
    "ItemsPage",
    "NewsItem",
    "gp_items",
    "gp_news",
    "news_mark_read",
    "panels_for",
    "register_news",
    "register_news_link",
    "register_panel",
]
