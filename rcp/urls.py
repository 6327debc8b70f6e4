"""Every route of the RCP, under ``rcp/`` (but a new case, made from the patient's page)."""

from django.urls import include, path

from rcp.views import (
    calendar,
    cases,
    codes,
    committee_admin,
    committees,
    documents,
    home,
    indicators,
    key_images,
    live,
    outputs,
    sessions,
)

committee_patterns = [
    path("", committees.committee_detail, name="rcp-committee"),
    # Its chair and coordinators manage its members and required specialties.
    path("membres/", committee_admin.committee_members, name="rcp-committee-members"),
    path(
        "membres/<int:member_id>/role/",
        committee_admin.committee_member_role,
        name="rcp-committee-member-role",
    ),
    path(
        "membres/<int:member_id>/retirer/",
        committee_admin.committee_member_remove,
        name="rcp-committee-member-remove",
    ),
    path("specialites/", committee_admin.committee_specialties, name="rcp-committee-specialties"),
    path("calendrier.ics", calendar.committee_feed, name="rcp-committee-calendar"),
    path("indicateurs/", indicators.committee_indicators_page, name="rcp-committee-indicators"),
    path(
        "indicateurs.csv", indicators.committee_indicators_csv, name="rcp-committee-indicators-csv"
    ),
]

session_patterns = [
    path("", sessions.session_detail, name="rcp-session"),
    path("ordre-du-jour/", sessions.session_agenda_add, name="rcp-session-agenda-add"),
    path("ordre-du-jour/envoyer/", sessions.session_agenda_send, name="rcp-session-agenda-send"),
    path("ordre-du-jour/deplacer/", sessions.session_agenda_move, name="rcp-session-agenda-move"),
    path("ouvrir/", sessions.session_open, name="rcp-session-open"),
    path("cloturer/", sessions.session_close, name="rcp-session-close"),
    path("direct/", live.session_live, name="rcp-session-live"),
    path("direct/quorum/", live.session_quorum_fragment, name="rcp-session-quorum"),
    path("presence/", live.session_attend, name="rcp-session-attend"),
    # The minutes
    path("pdf/", outputs.session_outputs, name="rcp-session-outputs"),
    path("pdf/generer/", outputs.minutes_pdf_request, name="rcp-minutes-pdf-request"),
    path("pdf/<int:document_id>/", outputs.minutes_pdf_download, name="rcp-minutes-pdf"),
]

case_patterns = [
    path("", cases.case_detail, name="rcp-case"),
    path("soumettre/", cases.case_submit, name="rcp-case-submit"),
    path("inscrire/", cases.case_agenda, name="rcp-case-agenda"),
    path("reporter/", cases.case_postpone, name="rcp-case-postpone"),
    path("enregistrer/", cases.case_register, name="rcp-case-register"),
    path("avis-ecrit/", cases.case_written_opinion, name="rcp-case-opinion"),
    path("decision/", cases.case_decision, name="rcp-case-decision"),
    path("valider/", cases.case_validate, name="rcp-case-validate"),
    path(
        "valider-sans-quorum/",
        cases.case_validate_without_quorum,
        name="rcp-case-validate-without-quorum",
    ),
    path(
        "confirmer-sans-quorum/",
        cases.case_confirm_without_quorum,
        name="rcp-case-confirm-without-quorum",
    ),
    path("nouvelle-version/", cases.case_amend, name="rcp-case-amend"),
    path("documents/", documents.case_document_upload, name="rcp-case-document-upload"),
    path("documents/<int:document_id>/", documents.case_document, name="rcp-case-document"),
    path("images-cles/", key_images.key_image_add, name="rcp-case-key-image-add"),
    path("images-cles/liste/", key_images.key_image_list, name="rcp-case-key-images"),
    path("images-cles/<int:key_image_id>/", key_images.key_image_show, name="rcp-case-key-image"),
    path(
        "images-cles/<int:key_image_id>/retirer/",
        key_images.key_image_remove,
        name="rcp-case-key-image-remove",
    ),
    # The fiche RCP
    path("pdf/", outputs.case_outputs, name="rcp-case-outputs"),
    path("pdf/generer/", outputs.case_pdf_request, name="rcp-case-pdf-request"),
    path("pdf/<int:document_id>/", outputs.case_pdf_download, name="rcp-case-pdf"),
]

# Secret token in the address: calendar apps cannot sign in. A token is URL-safe base64, which
# the slug converter matches.
calendar_feed_patterns = [
    path("<slug:token>.ics", calendar.user_feed, name="rcp-calendar-feed"),
    path(
        "<slug:token>/comites/<int:committee_id>.ics",
        calendar.committee_feed_by_token,
        name="rcp-committee-calendar-feed",
    ),
]

rcp_patterns = [
    path("", home.rcp_home, name="rcp-home"),
    path("mes-patients/", home.gp_cases, name="rcp-gp-cases"),
    path("comites/nouveau/", committee_admin.committee_create, name="rcp-committee-create"),
    path("comites/<int:committee_id>/", include(committee_patterns)),
    path("seances/<int:session_id>/", include(session_patterns)),
    path("dossiers/<int:case_id>/", include(case_patterns)),
    path(
        "codes/cim-10/", codes.code_search, {"list_name": "topography"}, name="rcp-codes-topography"
    ),
    path(
        "codes/cim-o-3/",
        codes.code_search,
        {"list_name": "morphology"},
        name="rcp-codes-morphology",
    ),
    path("calendrier/", calendar.calendar_settings, name="rcp-calendar"),
    path("agenda/", include(calendar_feed_patterns)),
    path("indicateurs/", indicators.indicators_page, name="rcp-indicators"),
    path("indicateurs.csv", indicators.indicators_csv, name="rcp-indicators-csv"),
]

urlpatterns = [
    path("rcp/", include(rcp_patterns)),
    path("patients/<int:patient_id>/rcp/nouveau/", cases.case_create, name="rcp-case-create"),
]
