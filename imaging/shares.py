"""Shares with a professional who has no account ("partage", issue 16).

A doctor of the care team shares studies of a patient, and documents of them (the studies'
reports, and what the higher apps offer through their AppConfig's ``shareable_documents``:
signed fiches RCP, signed tele-expertise reports), with a named professional found in the
national directory or by e-mail. The recipient gets a link; the link alone gives nothing:
opening it asks for a one-time code sent to the same e-mail (or a Pro Santé Connect sign-in
with the recipient's RPPS). Then only what was shared is shown, and the studies are read
through the portal's DICOMweb with a viewer token scoped to the share (imaging.dicomweb).

Secrets (the link's token, the codes, the viewer tokens) are stored as SHA-256 hashes only.
The e-mails carrying them are sent from this process once the transaction commits, not
through a Celery task: a task's arguments sit in the broker, where a code would be readable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F, Prefetch, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from imaging import packages
from imaging.models import (
    Share,
    ShareCode,
    ShareDocument,
    Study,
    StudyIdentity,
    StudyPackage,
    StudyReport,
    ViewerToken,
)
from imaging.permissions import may_revoke_share, share_refusal
from imaging.selectors import studies_visible_to
from portal import audit
from portal.audit import Actor
from portal.documents_models import GeneratedDocument
from portal.mail import portal_url
from portal.models import AuditPurpose, Patient
from portal.notifications import notify
from portal.psc import PALIER_SESSION_KEY
from portal.transitions import guarded_update

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 365
CODE_MINUTES = 10
CODES_PER_WINDOW = 3  # codes sent per share in CODE_MINUTES
WRONG_TRIES = 5  # wrong entries that burn a code
GRANT_HOURS = 12  # how long a verified code opens the share in that browser
VIEWER_TOKEN_HOURS = 4
SESSION_GRANTS = "share_grants"


class ShareError(Exception):
    """A refused share action; its message is shown to the user as it is."""


class ShareRefused(ShareError):
    pass


class CodeRateLimited(ShareError):
    pass


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# --- Documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareableDocument:
    key: str  # "app_label.model:id", as the form and the query string name it
    label: str
    document: object


def document_key(document) -> str:
    return f"{document._meta.label_lower}:{document.pk}"


def shareable_documents(*, user, patient: Patient) -> list[ShareableDocument]:
    """What ``user`` may share of ``patient`` besides the images: the reports of the studies
    he may see, and the documents each higher app offers (its AppConfig's
    ``shareable_documents(user=, patient=) -> [(document, label)]``; imaging imports no app
    above it)."""
    found = [
        ShareableDocument(
            document_key(report),
            _("Report: %(title)s (%(date)s)")
            % {
                "title": str(report),
                "date": report.study.study_date.strftime("%d/%m/%Y")
                if report.study.study_date
                else "?",
            },
            report,
        )
        for report in StudyReport.objects.filter(
            study__in=studies_visible_to(user, include_read_only=False).filter(patient=patient)
        ).select_related("study")
    ]
    for config in apps.get_app_configs():
        offer = getattr(config, "shareable_documents", None)
        if offer is not None:
            found += [
                ShareableDocument(document_key(document), str(label), document)
                for document, label in offer(user=user, patient=patient)
            ]
    return found


# --- Creating and revoking ------------------------------------------------------------------


def share_create(
    *,
    patient: Patient,
    studies: list[Study],
    documents: list[ShareableDocument],
    recipient_name: str,
    recipient_email: str,
    recipient_rpps: str = "",
    note: str = "",
    days: int = DEFAULT_DAYS,
    allow_download: bool = False,
    by: Actor,
) -> tuple[Share, str]:
    """Share ``studies`` and ``documents`` of ``patient``; the share and its link's raw token
    (returned once: only its hash is kept). The recipient is e-mailed the link after commit.
    With ``allow_download`` he may also take the studies away as a DICOMDIR zip."""
    refusal = share_refusal(by.user, patient)
    if refusal:
        raise ShareRefused(refusal)
    if not studies and not documents:
        raise ShareRefused(_("Choose at least one study or document to share."))
    if not 1 <= days <= MAX_DAYS:
        raise ShareRefused(_("A share lasts from 1 to 365 days."))
    visible = set(
        studies_visible_to(by.user, include_read_only=False)
        .filter(patient=patient, pk__in=[study.pk for study in studies])
        .values_list("pk", flat=True)
    )
    if any(study.pk not in visible for study in studies):
        raise ShareRefused(_("One of the studies is not one of this patient's that you may see."))
    offered = {item.key for item in shareable_documents(user=by.user, patient=patient)}
    if any(item.key not in offered for item in documents):
        raise ShareRefused(_("One of the documents cannot be shared."))
    raw = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        share = Share.objects.create(
            patient=patient,
            author=by.user,
            recipient_name=recipient_name.strip(),
            recipient_email=recipient_email.strip().lower(),
            recipient_rpps=recipient_rpps.strip(),
            note=note.strip(),
            created_at=now,
            expires_at=now + dt.timedelta(days=days),
            link_token_hash=_hash(raw),
            allow_download=allow_download,
        )
        share.studies.set(studies)
        ShareDocument.objects.bulk_create(
            ShareDocument(
                share=share,
                content_type=ContentType.objects.get_for_model(item.document),
                object_id=item.document.pk,
                label=item.label[:300],
            )
            for item in documents
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.EXPORT,
            action=audit.AuditAction.CREATE,
            patient=patient,
            obj=share,
            purpose=AuditPurpose.CARE,
            detail={
                "share": "created",
                "recipient": f"{share.recipient_name} <{share.recipient_email}>",
                "rpps": share.recipient_rpps,
                "studies": [study.study_instance_uid for study in studies],
                "documents": [item.key for item in documents],
                "days": days,
                "download": allow_download,
            },
        )
        link = portal_url(reverse("share-landing", args=[raw]))
        author = by.user.get_full_name() or by.user.email
        transaction.on_commit(
            lambda: _send(
                share.recipient_email,
                _("A colleague shared documents with you on the MIRC portal"),
                _(
                    "Hello,\n\n%(author)s shared medical documents with you on the MIRC "
                    "regional portal, until %(date)s.\n\nOpen them here (a code will be sent "
                    "to this address):\n%(link)s\n\nIf you were not expecting this message, "
                    "ignore it."
                )
                % {
                    "author": author,
                    "date": timezone.localtime(share.expires_at).strftime("%d/%m/%Y"),
                    "link": link,
                },
                what=f"share {share.pk} link",
            )
        )
    return share, raw


def share_revoke(*, share: Share, by: Actor, reason: str = "") -> bool:
    """End the share now: its link, its codes and its viewer tokens stop working at once
    (imaging.dicomweb checks the share on every request), and its DICOMDIR packages are
    withdrawn (files deleted). False if it was already revoked."""
    if not may_revoke_share(by.user, share):
        raise ShareRefused(_("Only the author, the referring doctor or the DPO may revoke it."))
    now = timezone.now()

    def then():
        ViewerToken.objects.filter(share=share, revoked_at__isnull=True).update(revoked_at=now)
        packages.share_packages_withdraw(share=share)
        audit.record(
            actor=by,
            event=audit.AuditEventId.EXPORT,
            action=audit.AuditAction.UPDATE,
            event_type=audit.AuditEventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
            patient=share.patient,
            obj=share,
            purpose=AuditPurpose.CARE,
            detail={"share": "revoked", "reason": reason[:300]},
        )

    done = guarded_update(
        Share,
        share.pk,
        changes={"revoked_at": now, "revoked_by": by.user, "revoke_reason": reason[:300]},
        expect={"revoked_at__isnull": True},
        then=then,
    )
    if done:
        share.revoked_at, share.revoked_by, share.revoke_reason = now, by.user, reason[:300]
    return done


# --- The recipient's codes ------------------------------------------------------------------


def share_code_send(*, share: Share, actor: Actor) -> ShareCode:
    """A new six-digit code for the share, e-mailed to its recipient (no health data in it).
    At most CODES_PER_WINDOW per share in CODE_MINUTES."""
    if not share.in_force:
        raise ShareRefused(_("This share is no longer available."))
    now = timezone.now()
    with transaction.atomic():
        # Serialises the senders of one share: the count below cannot be raced past.
        Share.objects.select_for_update().filter(pk=share.pk).first()
        recent = ShareCode.objects.filter(
            share=share, created_at__gt=now - dt.timedelta(minutes=CODE_MINUTES)
        ).count()
        if recent >= CODES_PER_WINDOW:
            audit.record(
                actor=actor,
                event=audit.AuditEventId.SECURITY_ALERT,
                action=audit.AuditAction.EXECUTE,
                outcome=audit.AuditOutcome.MINOR_FAILURE,
                patient=share.patient,
                obj=share,
                detail={"share": "code rate limit"},
            )
            raise CodeRateLimited(
                _("Too many codes were asked for: wait %(minutes)d minutes and ask again.")
                % {"minutes": CODE_MINUTES}
            )
        raw = f"{secrets.randbelow(10**6):06d}"
        code = ShareCode.objects.create(
            share=share,
            code_hash=_hash(f"{share.pk}:{raw}"),
            created_at=now,
            expires_at=now + dt.timedelta(minutes=CODE_MINUTES),
        )
        transaction.on_commit(
            lambda: _send(
                share.recipient_email,
                _("Your MIRC portal code"),
                _(
                    "Your code to open the documents shared with you: %(code)s\n\n"
                    "It is valid for %(minutes)d minutes and can be used once."
                )
                % {"code": raw, "minutes": CODE_MINUTES},
                what=f"share {share.pk} code",
            )
        )
    return code


def share_code_verify(*, share: Share, code: str, actor: Actor) -> bool:
    """True if ``code`` is the share's live code (then used up). A wrong code counts against
    the live code, which WRONG_TRIES wrong entries burn; each failure is audited."""
    if not share.in_force:
        return False
    now = timezone.now()
    live = (
        ShareCode.objects.filter(
            share=share, used_at__isnull=True, expires_at__gt=now, attempts__lt=WRONG_TRIES
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    expected = _hash(f"{share.pk}:{code.strip()}")
    if live is not None and hmac.compare_digest(live.code_hash, expected):
        # Used once: of two requests with the same code, one wins the UPDATE.
        return guarded_update(
            ShareCode,
            live.pk,
            changes={"used_at": now},
            expect={"used_at__isnull": True, "attempts__lt": WRONG_TRIES},
        )
    with transaction.atomic():
        if live is not None:
            ShareCode.objects.filter(pk=live.pk).update(attempts=F("attempts") + 1)
        audit.record(
            actor=actor,
            event=audit.AuditEventId.USER_AUTHENTICATION,
            action=audit.AuditAction.EXECUTE,
            outcome=audit.AuditOutcome.MINOR_FAILURE,
            patient=share.patient,
            obj=share,
            detail={"share": "wrong code" if live is not None else "no live code"},
        )
    return False


def live_code_exists(share: Share) -> bool:
    return ShareCode.objects.filter(
        share=share,
        used_at__isnull=True,
        expires_at__gt=timezone.now(),
        attempts__lt=WRONG_TRIES,
    ).exists()


# --- The recipient's grant (in the browser's session) --------------------------------------


def grant_session(request, share: Share) -> None:
    grants = dict(request.session.get(SESSION_GRANTS, {}))
    until = min(share.expires_at, timezone.now() + dt.timedelta(hours=GRANT_HOURS))
    grants[str(share.pk)] = until.timestamp()
    request.session[SESSION_GRANTS] = grants
    # A new key for the session that now opens health data (session fixation).
    request.session.cycle_key()


def psc_recipient(request, share: Share) -> bool:
    """The recipient signed in with Pro Santé Connect (his RPPS is the share's): no code."""
    user = getattr(request, "user", None)
    if not share.recipient_rpps or not getattr(user, "is_authenticated", False):
        return False
    if not request.session.get(PALIER_SESSION_KEY):
        return False
    professional = getattr(user, "professional", None)
    return professional is not None and professional.rpps == share.recipient_rpps


def session_granted(request, share: Share) -> bool:
    until = request.session.get(SESSION_GRANTS, {}).get(str(share.pk))
    if until is not None and until > timezone.now().timestamp():
        return True
    return psc_recipient(request, share)


def recipient_actor(request, share: Share) -> Actor:
    """Who opens the share, for the audit: the PSC user, or the recipient as the author gave
    him (he has no account)."""
    actor = Actor.from_request(request)
    if psc_recipient(request, share):
        return actor
    return Actor(
        ip=actor.ip,
        session_hash=actor.session_hash,
        name=share_actor_name(share),
    )


def share_actor_name(share: Share) -> str:
    return f"partage {share.pk}: {share.recipient_name} {share.recipient_email}"[:200]


def share_opened(*, share: Share, actor: Actor, what: str, obj=None) -> None:
    """One opening (the share's page, a study in the viewer, a document): counted, audited
    against the patient with the recipient's identity as given. The first one is told to the
    author (without the patient's name), who then knows the documents reached their reader."""
    now = timezone.now()
    with transaction.atomic():
        # The first opening is the one that finds the counter at 0 (one guarded UPDATE: of
        # two first openings at once, one is first).
        first = Share.objects.filter(pk=share.pk, view_count=0).update(
            view_count=1, last_viewed_at=now
        )
        if first:
            notify(
                [share.author],
                gettext_noop("%(recipient)s opened the documents you shared with them."),
                reverse("patient-detail", kwargs={"patient_id": share.patient_id}),
                params={"recipient": share.recipient_name},
            )
        else:
            Share.objects.filter(pk=share.pk).update(
                view_count=F("view_count") + 1, last_viewed_at=now
            )
        audit.record(
            actor=actor,
            event=audit.AuditEventId.INSTANCES_ACCESSED
            if isinstance(obj, Study)
            else audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.READ,
            patient=share.patient,
            obj=obj if obj is not None else share,
            purpose=AuditPurpose.CARE,
            detail={"share": share.pk, "view": what},
        )


# A token the recipient's session already holds is reused while it has this long to live:
# a viewer opened from the page keeps working for a reading session.
VIEWER_TOKEN_REUSE_MARGIN = dt.timedelta(minutes=30)


def share_viewer_token(*, share: Share, held: str = "") -> str:
    """A DICOMweb token for the share's studies, for the viewer of the recipient's page:
    ``held`` (the raw token his session keeps) while it is the share's, unrevoked and far
    from its end, else a new one; raw value returned, only its hash kept. It dies with the
    share (imaging.dicomweb checks both)."""
    now = timezone.now()
    if (
        held
        and ViewerToken.objects.filter(
            token_hash=_hash(held),
            share=share,
            revoked_at__isnull=True,
            expires_at__gt=now + VIEWER_TOKEN_REUSE_MARGIN,
        ).exists()
    ):
        return held
    raw = secrets.token_urlsafe(32)
    ViewerToken.objects.create(
        token_hash=_hash(raw),
        share=share,
        patient=share.patient,
        expires_at=min(share.expires_at, now + dt.timedelta(hours=VIEWER_TOKEN_HOURS)),
    )
    return raw


# --- The recipient's DICOMDIR package (imaging.packages) ---------------------------------------


def share_package_request(*, share: Share, actor: Actor) -> StudyPackage:
    """A DICOMDIR zip of the share's studies still of its patient and of its generated
    documents, for its recipient (``actor``, audited against the patient); the build is queued
    after commit. A live package of the share is reused rather than made twice.

    The share's own rules stand in for a user's permission: in force (not revoked, expired or
    suspended by the patient's opposition) and its author allowed the download. The studies'
    reports are in the zip as their studies carry them (PS3.3 Encapsulated PDF, SR), as the
    share's viewer already shows them; a shared report of a study not shared is not."""
    if not share.in_force:
        raise ShareRefused(_("This share is no longer available."))
    if not share.allow_download:
        raise ShareRefused(_("The doctor who shared these images did not allow downloading them."))
    studies = list(
        shared_studies(share)
        .filter(identity=StudyIdentity.MATCHED)
        .order_by("study_date", "study_time", "pk")
    )
    if not studies:
        raise ShareRefused(_("This share holds no images to download."))
    documents = []
    for item in share.documents.select_related("content_type"):
        document = item.content_type.get_object_for_this_type(pk=item.object_id)
        if isinstance(document, GeneratedDocument):
            documents.append((item.label, document))
    with transaction.atomic():
        # Serialises the recipient's requests (a double click): the second finds the first's.
        Share.objects.select_for_update().filter(pk=share.pk).first()
        try:
            return packages.package_enqueue(
                by=actor,
                patient=share.patient,
                studies=studies,
                documents=documents,
                label=_("Share with %(name)s") % {"name": share.recipient_name},
                share=share,
            )
        except packages.PackageRefused as refusal:
            raise ShareRefused(str(refusal)) from refusal


def share_package(share: Share, package_id) -> StudyPackage | None:
    """The share's package ``package_id`` (None for another share's, or a doctor's)."""
    if not share.allow_download:
        return None
    package = StudyPackage.objects.filter(
        pk=package_id, share=share, patient_id=share.patient_id
    ).first()
    if package is not None:
        package.patient = share.patient  # opened with the share: no second query
    return package


def share_package_downloaded(*, share: Share, package: StudyPackage, actor: Actor) -> None:
    """The recipient took the zip (DCM 110106 Export): audited against the patient in his
    name, and counted as an opening of the share."""
    studies = sorted(package.studies.values_list("study_instance_uid", flat=True))
    with transaction.atomic():
        Share.objects.filter(pk=share.pk).update(
            view_count=F("view_count") + 1, last_viewed_at=timezone.now()
        )
        audit.record(
            actor=actor,
            event=audit.AuditEventId.EXPORT,
            action=audit.AuditAction.READ,
            obj=package,
            patient=share.patient,
            purpose=AuditPurpose.CARE,
            detail={
                "share": share.pk,
                "format": "DICOMDIR zip",
                "studies": studies,
                "sha256": package.sha256,
                "size": package.size,
                # Files of the studies the zip does not hold (imaging.packages.UNDESCRIBABLE).
                "omitted": package.omitted_instances,
            },
        )


# --- Reads ----------------------------------------------------------------------------------


def share_by_link_token(raw: str) -> Share | None:
    return Share.objects.filter(link_token_hash=_hash(raw)).select_related("patient").first()


def shared_studies(share: Share) -> QuerySet[Study]:
    """The share's studies still of its patient: a study an identity correction moved to
    another patient leaves the share with it."""
    return share.studies.filter(patient_id=share.patient_id)


def share_contents(share: Share) -> tuple[list[Study], list[ShareDocument]]:
    return (
        list(shared_studies(share).order_by("-study_date", "-pk")),
        list(share.documents.select_related("content_type")),
    )


def shares_of_patient(patient: Patient) -> QuerySet[Share]:
    """The patient's shares, newest first, with what the panel shows (three queries)."""
    return (
        Share.objects.filter(patient=patient)
        .select_related("patient", "author", "revoked_by")
        .prefetch_related(
            Prefetch("studies", queryset=Study.objects.order_by("-study_date", "-pk")),
            "documents",
        )
    )


def shares_for_dpo(*, show_all: bool = False) -> QuerySet[Share]:
    """The region's shares for the data protection officer: those still open (not revoked,
    not expired), the soonest to end first; with ``show_all``, every share, newest first.
    Constant queries per page (author, patient, revoker joined; studies and documents
    prefetched)."""
    shares = Share.objects.select_related("patient", "author", "revoked_by").prefetch_related(
        Prefetch("studies", queryset=Study.objects.order_by("-study_date", "-pk")), "documents"
    )
    if show_all:
        return shares.order_by("-created_at", "-pk")
    return shares.filter(revoked_at__isnull=True, expires_at__gt=timezone.now()).order_by(
        "expires_at", "pk"
    )


def _send(address: str, subject: str, body: str, *, what: str) -> None:
    """One e-mail to an address without an account. A failure is logged, not raised: the
    author's share exists, and the recipient can ask for a code again."""
    try:
        EmailMessage(
            subject=subject,
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
        ).send()
    except OSError as error:
        logger.warning("%s: e-mail not sent: %s", what, error)
