from django.urls import include, path

from rcp import views, views_codes

urlpatterns = [
    path("rcp/", views.rcp_home, name="rcp-home"),
    path("rcp/mes-patients/", views.gp_cases, name="rcp-gp-cases"),
    path("rcp/comites/<int:committee_id>/", views.committee_detail, name="rcp-committee"),
    path("rcp/seances/<int:session_id>/", views.session_detail, name="rcp-session"),
    path(
        "rcp/seances/<int:session_id>/ordre-du-jour/",
        views.session_agenda_add,
        name="rcp-session-agenda-add",
    ),
    path("rcp/seances/<int:session_id>/ouvrir/", views.session_open, name="rcp-session-open"),
    path("rcp/seances/<int:session_id>/cloturer/", views.session_close, name="rcp-session-close"),
    path(
        "rcp/seances/<int:session_id>/ordre-du-jour/envoyer/",
        views.session_agenda_send,
        name="rcp-session-agenda-send",
    ),
    path(
        "rcp/seances/<int:session_id>/ordre-du-jour/deplacer/",
        views.session_agenda_move,
        name="rcp-session-agenda-move",
    ),
    path("rcp/seances/<int:session_id>/direct/", views.session_live, name="rcp-session-live"),
    path(
        "rcp/seances/<int:session_id>/direct/quorum/",
        views.session_quorum_fragment,
        name="rcp-session-quorum",
    ),
    path("rcp/seances/<int:session_id>/presence/", views.session_attend, name="rcp-session-attend"),
    path("patients/<int:patient_id>/rcp/nouveau/", views.case_create, name="rcp-case-create"),
    path("rcp/dossiers/<int:case_id>/", views.case_detail, name="rcp-case"),
    path("rcp/dossiers/<int:case_id>/soumettre/", views.case_submit, name="rcp-case-submit"),
    path("rcp/dossiers/<int:case_id>/inscrire/", views.case_agenda, name="rcp-case-agenda"),
    path("rcp/dossiers/<int:case_id>/reporter/", views.case_postpone, name="rcp-case-postpone"),
    path("rcp/dossiers/<int:case_id>/enregistrer/", views.case_register, name="rcp-case-register"),
    path(
        "rcp/dossiers/<int:case_id>/avis-ecrit/",
        views.case_written_opinion,
        name="rcp-case-opinion",
    ),
    path(
        "rcp/dossiers/<int:case_id>/documents/",
        views.case_document_upload,
        name="rcp-case-document-upload",
    ),
    path(
        "rcp/dossiers/<int:case_id>/documents/<int:document_id>/",
        views.case_document,
        name="rcp-case-document",
    ),
    path("rcp/dossiers/<int:case_id>/decision/", views.case_decision, name="rcp-case-decision"),
    path("rcp/dossiers/<int:case_id>/valider/", views.case_validate, name="rcp-case-validate"),
    path(
        "rcp/dossiers/<int:case_id>/valider-sans-quorum/",
        views.case_validate_without_quorum,
        name="rcp-case-validate-without-quorum",
    ),
    path(
        "rcp/dossiers/<int:case_id>/confirmer-sans-quorum/",
        views.case_confirm_without_quorum,
        name="rcp-case-confirm-without-quorum",
    ),
    path("rcp/dossiers/<int:case_id>/nouvelle-version/", views.case_amend, name="rcp-case-amend"),
    path(
        "rcp/codes/cim-10/",
        views_codes.code_search,
        {"list_name": "topography"},
        name="rcp-codes-topography",
    ),
    path(
        "rcp/codes/cim-o-3/",
        views_codes.code_search,
        {"list_name": "morphology"},
        name="rcp-codes-morphology",
    ),
    path("rcp/", include("rcp.urls_calendar")),
    path("rcp/", include("rcp.urls_outputs")),
    path("rcp/", include("rcp.urls_indicators")),
    path("rcp/", include("rcp.urls_key_images")),
]
