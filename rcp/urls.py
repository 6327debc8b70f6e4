"""Every route of the RCP, under ``rcp/`` (but the new case, from the patient's page)."""

from django.urls import path

from rcp.views import (
    calendar,
    cases,
    codes,
    committees,
    documents,
    home,
    indicators,
    key_images,
    live,
    outputs,
    sessions,
)

S = "rcp/seances/<int:session_id>/"
C = "rcp/dossiers/<int:case_id>/"

urlpatterns = [
    # --- Overview and committees
    path("rcp/", home.rcp_home, name="rcp-home"),
    path("rcp/mes-patients/", home.gp_cases, name="rcp-gp-cases"),
    path("rcp/comites/<int:committee_id>/", committees.committee_detail, name="rcp-committee"),
    # --- Sessions
    path(S, sessions.session_detail, name="rcp-session"),
    path(S + "ordre-du-jour/", sessions.session_agenda_add, name="rcp-session-agenda-add"),
    path(S + "ouvrir/", sessions.session_open, name="rcp-session-open"),
    path(S + "cloturer/", sessions.session_close, name="rcp-session-close"),
    path(
        S + "ordre-du-jour/envoyer/", sessions.session_agenda_send, name="rcp-session-agenda-send"
    ),
    path(
        S + "ordre-du-jour/deplacer/", sessions.session_agenda_move, name="rcp-session-agenda-move"
    ),
    path(S + "direct/", live.session_live, name="rcp-session-live"),
    path(S + "direct/quorum/", live.session_quorum_fragment, name="rcp-session-quorum"),
    path(S + "presence/", live.session_attend, name="rcp-session-attend"),
    # --- Cases
    path("patients/<int:patient_id>/rcp/nouveau/", cases.case_create, name="rcp-case-create"),
    path(C, cases.case_detail, name="rcp-case"),
    path(C + "soumettre/", cases.case_submit, name="rcp-case-submit"),
    path(C + "inscrire/", cases.case_agenda, name="rcp-case-agenda"),
    path(C + "reporter/", cases.case_postpone, name="rcp-case-postpone"),
    path(C + "enregistrer/", cases.case_register, name="rcp-case-register"),
    path(C + "avis-ecrit/", cases.case_written_opinion, name="rcp-case-opinion"),
    path(C + "decision/", cases.case_decision, name="rcp-case-decision"),
    path(C + "valider/", cases.case_validate, name="rcp-case-validate"),
    path(
        C + "valider-sans-quorum/",
        cases.case_validate_without_quorum,
        name="rcp-case-validate-without-quorum",
    ),
    path(
        C + "confirmer-sans-quorum/",
        cases.case_confirm_without_quorum,
        name="rcp-case-confirm-without-quorum",
    ),
    path(C + "nouvelle-version/", cases.case_amend, name="rcp-case-amend"),
    # --- A case's documents and key images
    path(C + "documents/", documents.case_document_upload, name="rcp-case-document-upload"),
    path(C + "documents/<int:document_id>/", documents.case_document, name="rcp-case-document"),
    path(C + "images-cles/", key_images.key_image_add, name="rcp-case-key-image-add"),
    path(C + "images-cles/liste/", key_images.key_image_list, name="rcp-case-key-images"),
    path(
        C + "images-cles/<int:key_image_id>/", key_images.key_image_show, name="rcp-case-key-image"
    ),
    path(
        C + "images-cles/<int:key_image_id>/retirer/",
        key_images.key_image_remove,
        name="rcp-case-key-image-remove",
    ),
    # --- PDF outputs: the fiche RCP of a case, the minutes of a session
    path(C + "pdf/", outputs.case_outputs, name="rcp-case-outputs"),
    path(C + "pdf/generer/", outputs.case_pdf_request, name="rcp-case-pdf-request"),
    path(C + "pdf/<int:document_id>/", outputs.case_pdf_download, name="rcp-case-pdf"),
    path(S + "pdf/", outputs.session_outputs, name="rcp-session-outputs"),
    path(S + "pdf/generer/", outputs.minutes_pdf_request, name="rcp-minutes-pdf-request"),
    path(S + "pdf/<int:document_id>/", outputs.minutes_pdf_download, name="rcp-minutes-pdf"),
    # --- Code lists of the fiche RCP
    path(
        "rcp/codes/cim-10/",
        codes.code_search,
        {"list_name": "topography"},
        name="rcp-codes-topography",
    ),
    path(
        "rcp/codes/cim-o-3/",
        codes.code_search,
        {"list_name": "morphology"},
        name="rcp-codes-morphology",
    ),
    # --- Calendar feeds (rcp/calendar.py)
    path("rcp/calendrier/", calendar.calendar_settings, name="rcp-calendar"),
    # Secret token in the address: calendar apps cannot sign in. A token is URL-safe base64,
    # which the slug converter matches.
    path("rcp/agenda/<slug:token>.ics", calendar.user_feed, name="rcp-calendar-feed"),
    path(
        "rcp/agenda/<slug:token>/comites/<int:committee_id>.ics",
        calendar.committee_feed_by_token,
        name="rcp-committee-calendar-feed",
    ),
    path(
        "rcp/comites/<int:committee_id>/calendrier.ics",
        calendar.committee_feed,
        name="rcp-committee-calendar",
    ),
    # --- Indicators, of one committee or all
    path("rcp/indicateurs/", indicators.indicators_page, name="rcp-indicators"),
    path("rcp/indicateurs.csv", indicators.indicators_csv, name="rcp-indicators-csv"),
    path(
        "rcp/comites/<int:committee_id>/indicateurs/",
        indicators.committee_indicators_page,
        name="rcp-committee-indicators",
    ),
    path(
        "rcp/comites/<int:committee_id>/indicateurs.csv",
        indicators.committee_indicators_csv,
        name="rcp-committee-indicators-csv",
    ),
]
