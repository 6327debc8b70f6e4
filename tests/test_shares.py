"""Shares with a doctor who has no account (imaging.shares, issue 16).

Dr Claire Martin (the oncologist, the patient's referring doctor) shares a CT and its report
with Dr Hélène Garnier, a radiologist outside the region, by e-mail. The link alone opens
nothing: a one-time code sent to that address does, and then only what was shared.
"""

import datetime as dt
import logging
import re

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from imaging import services as imaging_services
from imaging import shares
from imaging.models import Share, ShareCode, StudyReport, ViewerToken
from portal import audit as portal_audit
from portal.audit import Actor
from portal.logging import RedactSecrets
from portal.models import AuditEvent, AuditEventId, AuditOutcome, CareRole
from tests import builders
from tests.conftest import client_for
from tests.dicom_factory import pdf_report_file

RECIPIENT = "h.garnier@chu-lyon.test"
_capture = {}


@pytest.fixture(autouse=True)
def _on_commit(django_capture_on_commit_callbacks):
    # The e-mails leave once the transaction commits: run in the test's own transaction,
    # each action is wrapped in ``committed()`` so that its mail is sent when it ends.
    _capture["fixture"] = django_capture_on_commit_callbacks


def committed():
    return _capture["fixture"](execute=True)


@pytest.fixture
def imaged(world):
    """A CT of the patient with its PDF report, and another CT of the same patient."""
    ct = builders.ct_study(world.patient, by=world.oncologist.user, key="share-ct")
    batch = imaging_services.ingest_batch_create(
        patient=world.patient,
        files=[SimpleUploadedFile("cr.dcm", pdf_report_file(world.patient, key="share-ct"))],
        by=Actor(user=world.oncologist.user),
    )
    imaging_services.ingest_run(batch=batch)
    other = builders.ct_study(world.patient, by=world.oncologist.user, key="share-other")
    return {"ct": ct, "other": other, "report": StudyReport.objects.get(study=ct["study"])}


def _share(world, imaged, *, by=None, days=30, rpps=""):
    by = by or world.oncologist.user
    report = shares.shareable_documents(user=by, patient=world.patient)
    with committed():
        return shares.share_create(
            patient=world.patient,
            studies=[imaged["ct"]["study"]],
            documents=[item for item in report if item.document == imaged["report"]],
            recipient_name="Dr Hélène Garnier",
            recipient_email=RECIPIENT,
            recipient_rpps=rpps,
            note="Avis sur le nodule, merci.",
            days=days,
            by=Actor(user=by),
        )


def _code_from_outbox() -> str:
    [code] = re.findall(r"\b(\d{6})\b", mail.outbox[-1].body)
    return code


def _opened_client(token) -> Client:
    """The recipient's browser, past the code."""
    client = Client()
    mail.outbox.clear()
    with committed():
        assert client.post(reverse("share-landing", args=[token])).status_code == 302
    response = client.post(reverse("share-code", args=[token]), {"code": _code_from_outbox()})
    assert response.status_code == 302
    assert response["Location"] == reverse("share-contents", args=[token])
    return client


def _viewer_token(client, token) -> str:
    page = client.get(reverse("share-contents", args=[token])).content.decode()
    return re.search(r"#token=([A-Za-z0-9_-]+)", page).group(1)


# --- Creating a share --------------------------------------------------------------------------


def test_the_referring_doctor_shares_a_ct_and_its_report_by_e_mail(world, imaged):
    mail.outbox.clear()
    page = client_for(world.oncologist.user).get(
        reverse("share-create", args=[world.patient.pk]) + f"?study={imaged['ct']['study'].pk}"
    )
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    form = page.context["form"]
    assert form.initial["studies"] == [str(imaged["ct"]["study"].pk)]
    [report] = [key for key, _label in form.fields["documents"].choices]
    with committed():
        response = client_for(world.oncologist.user).post(
            reverse("share-create", args=[world.patient.pk]),
            {
                "studies": [imaged["ct"]["study"].pk],
                "documents": [report],
                "recipient_name": "Dr Hélène Garnier",
                "recipient_email": RECIPIENT,
                "days": 30,
            },
        )
    assert response.status_code == 302
    share = Share.objects.get()
    assert list(share.studies.all()) == [imaged["ct"]["study"]]
    assert share.documents.get().object_id == imaged["report"].pk
    assert (share.expires_at - share.created_at) == dt.timedelta(days=30)
    # The link, and no health data: neither the patient's name nor the study.
    [message] = mail.outbox
    assert message.to == [RECIPIENT]
    assert "/partage/" in message.body
    assert "Dupont" not in message.body and "CT" not in message.body
    event = AuditEvent.objects.get(event_id=AuditEventId.EXPORT, object_type="imaging.share")
    assert event.patient == world.patient and event.actor == world.oncologist.user


def test_expiry_is_one_day_to_one_year(world, imaged):
    for days in (0, 366):
        with pytest.raises(shares.ShareRefused):
            _share(world, imaged, days=days)
    response = client_for(world.oncologist.user).post(
        reverse("share-create", args=[world.patient.pk]),
        {
            "studies": [imaged["ct"]["study"].pk],
            "recipient_name": "X",
            "recipient_email": RECIPIENT,
            "days": 400,
        },
    )
    assert response.status_code == 200 and "days" in response.context["form"].errors
    assert not Share.objects.exists()


def test_only_the_care_team_shares_and_the_opposition_forbids_it(world, imaged):
    # Outside the care team: the patient does not even exist for him.
    url = reverse("share-create", args=[world.patient.pk])
    assert client_for(world.outsider.user).get(url).status_code == 404
    with pytest.raises(shares.ShareRefused):
        _share(world, imaged, by=world.outsider.user)
    world.patient.sharing_opposed = True
    world.patient.save(update_fields=["sharing_opposed"])
    page = client_for(world.oncologist.user).get(url)
    assert "s'oppose au partage" in page.context["refusal"]
    with pytest.raises(shares.ShareRefused, match="oppose"):
        _share(world, imaged)
    assert not Share.objects.exists()


def test_a_study_of_another_patient_cannot_be_shared(world, imaged):
    foreign = builders.ct_study(world.other_patient, by=world.outsider.user, key="share-foreign")
    with pytest.raises(shares.ShareRefused):
        shares.share_create(
            patient=world.patient,
            studies=[foreign["study"]],
            documents=[],
            recipient_name="X",
            recipient_email=RECIPIENT,
            by=Actor(user=world.oncologist.user),
        )


# --- The recipient's codes ---------------------------------------------------------------------


def test_the_link_alone_opens_nothing(world, imaged):
    _share_row, token = _share(world, imaged)
    client = Client()
    landing = client.get(reverse("share-landing", args=[token]))
    assert landing.status_code == 200
    text = landing.content.decode()
    assert "h•••" in text and RECIPIENT not in text
    assert "Dupont" not in text  # the patient is named only past the code
    for name, args in [
        ("share-contents", [token]),
        ("share-study", [token, imaged["ct"]["study"].pk]),
        ("share-document", [token, 1]),
    ]:
        response = client.get(reverse(name, args=args))
        assert response.status_code == 302
        assert response["Location"] == reverse("share-landing", args=[token])
    assert Client().get(reverse("share-landing", args=["not-a-real-token-at-all"])).status_code == (
        404
    )


def test_a_code_opens_once_and_a_wrong_one_is_audited(world, imaged):
    share, token = _share(world, imaged)
    client = Client()
    mail.outbox.clear()
    with committed():
        client.post(reverse("share-landing", args=[token]))
    [message] = mail.outbox
    assert message.to == [RECIPIENT] and "Dupont" not in message.body
    code = _code_from_outbox()
    wrong = "000000" if code != "000000" else "111111"
    response = client.post(reverse("share-code", args=[token]), {"code": wrong})
    assert response.status_code == 200 and response.context["form"].errors
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.USER_AUTHENTICATION,
        outcome=AuditOutcome.MINOR_FAILURE,
        patient=world.patient,
    ).exists()
    assert client.post(reverse("share-code", args=[token]), {"code": code}).status_code == 302
    # Used: another browser cannot reuse it.
    again = Client().post(reverse("share-code", args=[token]), {"code": code})
    assert again.status_code == 200
    assert client.get(reverse("share-contents", args=[token])).status_code == 200


def test_codes_expire_after_ten_minutes(world, imaged):
    share, token = _share(world, imaged)
    client = Client()
    with committed():
        client.post(reverse("share-landing", args=[token]))
    code = _code_from_outbox()
    ShareCode.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = client.post(reverse("share-code", args=[token]), {"code": code})
    assert response.status_code == 200
    assert "ne fonctionne plus" in str(response.context["form"].errors)


def test_five_wrong_codes_burn_it_and_codes_are_rate_limited(world, imaged):
    share, token = _share(world, imaged)
    client = Client()
    with committed():
        client.post(reverse("share-landing", args=[token]))
    code = _code_from_outbox()
    wrong = "000000" if code != "000000" else "111111"
    for _attempt in range(shares.WRONG_TRIES):
        client.post(reverse("share-code", args=[token]), {"code": wrong})
    response = client.post(reverse("share-code", args=[token]), {"code": code})
    assert response.status_code == 200  # burnt: the right code no longer opens
    # Two more codes in the window, then a clear refusal.
    for _n in range(shares.CODES_PER_WINDOW - 1):
        assert client.post(reverse("share-landing", args=[token])).status_code == 302
    mail.outbox.clear()
    refused = client.post(reverse("share-landing", args=[token]), follow=True)
    assert "Too many codes" in refused.content.decode() or "Trop de codes" in (
        refused.content.decode()
    )
    assert mail.outbox == []


# --- What the recipient sees --------------------------------------------------------------------


def test_the_recipient_sees_the_shared_ct_and_report_and_nothing_else(world, imaged):
    share, token = _share(world, imaged)
    client = _opened_client(token)
    page = client.get(reverse("share-contents", args=[token]))
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    assert [study.pk for study in page.context["studies"]] == [imaged["ct"]["study"].pk]
    viewer = client.get(reverse("share-study", args=[token, imaged["ct"]["study"].pk]))
    assert viewer.status_code == 200
    assert [item["uid"] for item in viewer.context["viewer"]["studies"]] == [
        imaged["ct"]["study_uid"]
    ]
    # The other CT of the same patient, the patient's page, the dossier: refused.
    assert (
        client.get(reverse("share-study", args=[token, imaged["other"]["study"].pk])).status_code
        == 404
    )
    assert client.get(reverse("patient-detail", args=[world.patient.pk])).status_code == 302
    assert client.get(reverse("imaging-dossier", args=[world.patient.pk])).status_code == 302
    [document] = page.context["documents"]
    pdf = client.get(reverse("share-document", args=[token, document.pk]))
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    share.refresh_from_db()
    assert share.view_count == 3  # the contents, the viewer, the report
    openings = AuditEvent.objects.filter(
        patient=world.patient, actor_name__startswith=f"partage {share.pk}:"
    )
    assert openings.filter(outcome=AuditOutcome.SUCCESS).count() == 3
    assert all(RECIPIENT in event.actor_name for event in openings)
    assert openings.filter(event_id=AuditEventId.SECURITY_ALERT).count() == 1  # the other CT


def test_the_author_is_told_of_the_first_opening_without_the_patients_name(world, imaged):
    from portal.models import Notification

    share, token = _share(world, imaged)
    author = world.oncologist.user
    before = Notification.objects.filter(recipient=author).count()
    client = _opened_client(token)
    with committed():
        client.get(reverse("share-contents", args=[token]))
    with committed():
        client.get(reverse("share-study", args=[token, imaged["ct"]["study"].pk]))

    [notice] = Notification.objects.filter(recipient=author).order_by("pk")[before:]
    assert notice.url == reverse("patient-detail", args=[world.patient.pk])
    assert world.patient.birth_name.upper() not in str(notice.params).upper()
    page = client_for(author).get(reverse("notification-list")).content.decode()
    assert "Dr Hélène Garnier opened the documents you shared with them." in page or (
        "Dr Hélène Garnier a ouvert les documents que vous lui avez partagés." in page
    )
    share.refresh_from_db()
    assert share.view_count == 2


def test_the_contents_page_keeps_one_viewer_token_per_reading_session(world, imaged):
    share, token = _share(world, imaged)
    client = _opened_client(token)
    first = _viewer_token(client, token)
    # Visiting the page again (back from the viewer) does not mint a token per visit.
    assert _viewer_token(client, token) == first
    assert ViewerToken.objects.filter(share=share).count() == 1
    # Close to its end, the page hands out a fresh one, for a viewer that outlives the visit.
    ViewerToken.objects.filter(share=share).update(
        expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    second = _viewer_token(client, token)
    assert second != first
    # Another session of the recipient (another browser) has its own.
    assert _viewer_token(_opened_client(token), token) not in {first, second}
    assert ViewerToken.objects.filter(share=share).count() == 3


def test_the_share_token_reads_exactly_the_shared_study_on_dicomweb(world, imaged):
    share, token = _share(world, imaged)
    client = _opened_client(token)
    raw = _viewer_token(client, token)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    ct, other = imaged["ct"], imaged["other"]
    series = f"/dicomweb/studies/{ct['study_uid']}/series"
    assert Client().get(series, **bearer).status_code == 200
    frames = (
        f"/dicomweb/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/"
        f"{ct['sop_uid']}/frames/1"
    )
    assert Client().get(frames, **bearer).status_code == 200
    assert (
        Client().get(f"/dicomweb/studies/{other['study_uid']}/series", **bearer).status_code == 404
    )
    found = Client().get("/dicomweb/studies", **bearer).json()
    assert [study["0020000D"]["Value"][0] for study in found] == [ct["study_uid"]]
    # Read-only: no STOW-RS with it.
    stow = Client().post(
        "/dicomweb/studies",
        data=b"--x--",
        content_type='multipart/related; type="application/dicom"; boundary=x',
        **bearer,
    )
    assert stow.status_code == 403
    # The fast frame path never learns a share's credential.
    from django.core.cache import caches

    from imaging.grants import fast_grant_key

    assert caches["default"].get(fast_grant_key(shares._hash(raw), ct["study_uid"])) is None
    # The audit names the recipient, as the author gave him.
    event = (
        AuditEvent.objects.filter(
            event_id=AuditEventId.INSTANCES_ACCESSED, object_id=ct["study_uid"]
        )
        .order_by("pk")
        .last()
    )
    assert event.actor is None and RECIPIENT in event.actor_name
    # Revoked: the token dies with the share, at once.
    shares.share_revoke(share=share, by=Actor(user=world.oncologist.user))
    assert Client().get(series, **bearer).status_code == 401
    assert not ViewerToken.objects.filter(share=share, revoked_at__isnull=True).exists()


# --- Revoking and expiring ----------------------------------------------------------------------


def test_revoked_or_expired_shares_answer_a_clear_page(world, imaged):
    share, token = _share(world, imaged)
    client = _opened_client(token)
    shares.share_revoke(share=share, by=Actor(user=world.oncologist.user), reason="erreur")
    for name in ("share-landing", "share-code", "share-contents"):
        response = client.get(reverse(name, args=[token]))
        assert response.status_code == 410
        assert "revoked" in response.content.decode() or "révoqué" in response.content.decode()
    expired, expired_token = _share(world, imaged)
    Share.objects.filter(pk=expired.pk).update(
        created_at=timezone.now() - dt.timedelta(days=31),
        expires_at=timezone.now() - dt.timedelta(days=1),
    )
    response = Client().get(reverse("share-landing", args=[expired_token]))
    assert response.status_code == 410
    assert world.oncologist.user.email in response.content.decode()  # whom to ask


def test_who_may_revoke(world, imaged):
    share, _token = _share(world, imaged)
    # The GP is in the care team, but neither the author nor the referring doctor.
    with pytest.raises(shares.ShareRefused):
        shares.share_revoke(share=share, by=Actor(user=world.gp.user))
    response = client_for(world.gp.user).post(reverse("share-revoke", args=[share.pk]))
    assert response.status_code == 302
    share.refresh_from_db()
    assert share.revoked_at is None
    # The outsider does not learn the share exists.
    assert (
        client_for(world.outsider.user).post(reverse("share-revoke", args=[share.pk])).status_code
        == 404
    )
    # The DPO may, without being in care.
    assert (
        client_for(world.auditor_user).post(reverse("share-revoke", args=[share.pk])).status_code
        == 302
    )
    share.refresh_from_db()
    assert share.revoked_by == world.auditor_user
    assert (
        AuditEvent.objects.filter(
            event_type=portal_audit.AuditEventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
            object_type="imaging.share",
        ).count()
        == 1
    )
    # Revoked once: a second revocation changes nothing.
    assert shares.share_revoke(share=share, by=Actor(user=world.oncologist.user)) is False


def test_a_surgeon_of_the_care_team_shares_and_revokes_his_own(world, imaged):
    builders.care_team(world.patient, (world.surgeon, CareRole.CARE_TEAM))
    share, _token = _share(world, imaged, by=world.surgeon.user)
    assert shares.share_revoke(share=share, by=Actor(user=world.surgeon.user))


# --- The patient's page -------------------------------------------------------------------------


def test_the_patient_page_lists_the_shares_in_constant_queries(
    world, imaged, django_assert_max_num_queries
):
    share, token = _share(world, imaged)
    _opened_client(token)
    client = client_for(world.oncologist.user)
    url = reverse("patient-detail", args=[world.patient.pk])
    page = client.get(url).content.decode()
    assert 'data-testid="patient-shares"' in page
    assert "Dr Hélène Garnier" in page and RECIPIENT in page
    assert reverse("share-revoke", args=[share.pk]) in page
    client.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        client.get(url)
    for _n in range(3):
        _share(world, imaged)
    with django_assert_max_num_queries(len(one.captured_queries)):
        client.get(url)
    # The GP sees them, without a revoke link for another's share.
    gp_page = client_for(world.gp.user).get(url).content.decode()
    assert "Dr Hélène Garnier" in gp_page
    assert reverse("share-revoke", args=[share.pk]) not in gp_page


# --- Logs ---------------------------------------------------------------------------------------


def test_share_links_never_reach_a_log_line(world, imaged):
    from portal.logging import AccessLog
    from tests.test_logging_redaction import configured_handlers_output

    _share_row, token = _share(world, imaged)
    client = _opened_client(token)
    raw = _viewer_token(client, token)
    path = f"/partage/{token}/code/"
    with configured_handlers_output() as output:
        # daphne's access log (make demo), and Django's line for a refused request.
        AccessLog()(
            "http",
            "complete",
            {"path": path, "status": 200, "method": "POST", "client": "127.0.0.1:5", "size": 9},
        )
        logging.getLogger("django.request").warning("Gone: %s", f"/partage/{token}/contenu/")
        logging.getLogger("django.server").warning("next=%s", f"%2Fpartage%2F{token}%2F")
        logging.getLogger("imaging.dicomweb").warning("Authorization: Bearer %s", raw)
    logged = output.getvalue()
    assert token not in logged and raw not in logged
    assert "/partage/[redacted]/code/" in logged and "/partage/[redacted]/contenu/" in logged
    # The author's own pages under /partage/ carry no secret and stay readable.
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "/partage/patients/12/nouveau/", (), None
    )
    RedactSecrets().filter(record)
    assert record.getMessage() == "/partage/patients/12/nouveau/"


# --- The recipient from the national directory, and Pro Santé Connect ---------------------------


def test_a_recipient_found_in_the_national_directory_fills_name_and_rpps(world, imaged):
    from portal.directory_models import DirectoryIdType, DirectoryPerson
    from portal.identifiers import luhn_complete

    rpps = luhn_complete("1009999999")
    DirectoryPerson.objects.create(
        national_id=DirectoryIdType.RPPS + rpps,
        id_type=DirectoryIdType.RPPS,
        rpps=rpps,
        civility="DR",
        first_name="HÉLÈNE",
        last_name="GARNIER",
        profession_code="10",
        profession_label="Médecin",
    )
    client = client_for(world.oncologist.user)
    url = reverse("share-create", args=[world.patient.pk]) + f"?study={imaged['ct']['study'].pk}"
    found = client.get(url + "&q=garnier")
    assert rpps in found.content.decode()
    chosen = client.post(url, {"national_id": rpps})
    assert chosen.status_code == 200
    form = chosen.context["form"]
    assert form.initial["recipient_rpps"] == rpps
    assert form.initial["recipient_name"] == "DR Hélène GARNIER"
    assert form.initial["studies"] == [str(imaged["ct"]["study"].pk)]
    assert not Share.objects.exists()  # the e-mail is still to be given
    unknown = client.post(url, {"national_id": "10000000000"}, follow=True)
    assert "not in the national directory" in unknown.content.decode() or "annuaire" in (
        unknown.content.decode()
    )


def test_the_recipient_signed_in_with_pro_sante_connect_needs_no_code(world, imaged):
    from portal import psc

    share, token = _share(world, imaged, rpps=world.outsider.rpps)
    client = client_for(world.outsider.user)
    # Signed in, but not through Pro Santé Connect: the code is still asked.
    assert client.get(reverse("share-contents", args=[token])).status_code == 302
    session = client.session
    session[psc.PALIER_SESSION_KEY] = "eidas1"
    session.save()
    assert client.get(reverse("share-landing", args=[token])).status_code == 302
    response = client.get(reverse("share-contents", args=[token]))
    assert response.status_code == 200
    event = (
        AuditEvent.objects.filter(object_type="imaging.share", patient=world.patient)
        .order_by("pk")
        .last()
    )
    assert event.actor == world.outsider.user
    # Another professional's PSC session opens nothing.
    other = client_for(world.gp.user)
    session = other.session
    session[psc.PALIER_SESSION_KEY] = "eidas1"
    session.save()
    assert other.get(reverse("share-contents", args=[token])).status_code == 302


def test_an_opposition_recorded_after_the_share_suspends_it(world, imaged):
    share, token = _share(world, imaged)
    client = _opened_client(token)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {_viewer_token(client, token)}"}
    series = f"/dicomweb/studies/{imaged['ct']['study_uid']}/series"
    assert Client().get(series, **bearer).status_code == 200
    world.patient.sharing_opposed = True
    world.patient.save(update_fields=["sharing_opposed"])
    response = client.get(reverse("share-contents", args=[token]))
    assert response.status_code == 410
    assert "suspendu" in response.content.decode()
    assert Client().get(series, **bearer).status_code == 401
    panel = client_for(world.oncologist.user).get(
        reverse("patient-detail", args=[world.patient.pk])
    )
    assert "Suspendu" in panel.content.decode()


# --- The data protection officer's list ---------------------------------------------------------


def test_the_dpo_finds_every_open_share_and_revokes_one_from_his_list(
    world, imaged, django_assert_max_num_queries
):
    """The DPO is in no care team: his list (linked from the audit trail) is where he finds a
    share to revoke at once; a doctor gets the 403 of a page that is not his."""
    share, token = _share(world, imaged)
    dpo = client_for(world.auditor_user)
    assert 'data-testid="share-dpo-link"' in dpo.get(reverse("audit-event-list")).content.decode()
    url = reverse("share-dpo-list")
    page = dpo.get(url).content.decode()
    assert "Dr Hélène Garnier" in page and world.patient.display_name in page
    assert reverse("share-revoke", args=[share.pk]) in page
    dpo.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        dpo.get(url)
    for _n in range(3):
        _share(world, imaged)
    with django_assert_max_num_queries(len(one.captured_queries)):
        dpo.get(url)

    assert dpo.post(reverse("share-revoke", args=[share.pk])).status_code == 302
    open_list = dpo.get(url).content.decode()
    assert f'data-testid="share-dpo-{share.pk}"' not in open_list
    every = dpo.get(url + "?tous=1").content.decode()
    assert f'data-testid="share-dpo-{share.pk}"' in every and "Révoqué le" in every
    assert _opened_client_refused(token)
    assert client_for(world.oncologist.user).get(url).status_code == 403


def _opened_client_refused(token) -> bool:
    return Client().get(reverse("share-landing", args=[token])).status_code == 410
