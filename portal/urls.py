from django.contrib import admin
from django.urls import include, path

from portal import (
    health,
    psc,
    views,
    views_access,
    views_account,
    views_admin,
    views_gp,
    views_gp_home,
    views_session,
)

patient_patterns = [
    path("", views.patient_list, name="patient-list"),
    path("nouveau/", views.patient_register, name="patient-register"),
    path("<int:patient_id>/", views.patient_detail, name="patient-detail"),
    path("<int:patient_id>/equipe/ajouter/", views.care_team_add, name="care-team-add"),
    path(
        "<int:patient_id>/opposition-partage/",
        views.sharing_opposition,
        name="sharing-opposition",
    ),
    path(
        "<int:patient_id>/equipe/<int:relationship_id>/retirer/",
        views.care_team_end,
        name="care-team-end",
    ),
    path("<int:patient_id>/medecin-traitant/", views_gp.patient_gp, name="patient-gp"),
]

# A professional newly in charge of a patient (portal.views_access).
access_patterns = [
    path("recherche/", views_access.access_lookup, name="access-lookup"),
    path("demande/", views_access.access_request_create, name="access-request-create"),
    path("urgence/", views_access.access_emergency, name="access-emergency"),
    path("urgence/<int:emergency_id>/fin/", views_access.emergency_end, name="emergency-end"),
    path("mes-demandes/", views_access.access_request_list, name="access-request-list"),
    path("demandes-recues/", views_access.access_request_inbox, name="access-request-inbox"),
    path(
        "demandes/<int:access_request_id>/reponse/",
        views_access.access_request_answer,
        name="access-request-answer",
    ),
    path(
        "demandes/<int:access_request_id>/renouveler/",
        views_access.access_request_renew,
        name="access-request-renew",
    ),
    path("urgences/", views_access.emergency_review_list, name="emergency-review-list"),
    path(
        "urgences/<int:emergency_id>/revue/",
        views_access.emergency_review,
        name="emergency-review",
    ),
]

audit_patterns = [
    path("", views.audit_event_list, name="audit-event-list"),
    path(
        "patients/<int:patient_id>/acces.csv",
        views.patient_access_report,
        name="patient-access-report",
    ),
    path(
        "patients/<int:patient_id>/lettre-acces.pdf",
        views.patient_access_letter,
        name="patient-access-letter",
    ),
]

identity_patterns = [
    path("", views.identity_conflict_list, name="identity-conflict-list"),
    path(
        "<int:conflict_id>/resoudre/",
        views.identity_conflict_resolve,
        name="identity-conflict-resolve",
    ),
]

establishment_admin_patterns = [
    path("", views_admin.establishment_edit, name="administration-establishment"),
    path(
        "professionnels/",
        views_admin.establishment_professionals,
        name="administration-professionals",
    ),
    path(
        "professionnels/<int:affiliation_id>/retirer/",
        views_admin.affiliation_end,
        name="administration-affiliation-end",
    ),
    path(
        "professionnels/<int:professional_id>/roles/",
        views_admin.establishment_role_change,
        name="administration-professional-role",
    ),
]

administration_patterns = [
    path("", views_admin.administration_home, name="administration-home"),
    path(
        "etablissements/nouveau/",
        views_admin.establishment_create,
        name="administration-establishment-create",
    ),
    path("etablissements/<int:establishment_id>/", include(establishment_admin_patterns)),
    path("roles/", views_admin.role_list, name="administration-roles"),
    path(
        "roles/<str:role_code>/<int:user_id>/retirer/",
        views_admin.role_revoke,
        name="administration-role-revoke",
    ),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("accueil/nouveautes/lues/", views.home_news_mark_read, name="home-news-read"),
    path("health/", health.health, name="health"),
    path("patients/", include(patient_patterns)),
    path("", include("imaging.urls")),
    path("", include("rcp.urls")),
    path("", include("expertise.urls")),
    path("dicomweb/", include("imaging.dicomweb_urls")),
    path("partage/", include("imaging.share_urls")),
    path("acces/", include(access_patterns)),
    path("audit/", include(audit_patterns)),
    path("identitovigilance/", include(identity_patterns)),
    path("administration/", include(administration_patterns)),
    path("administration/", include("imaging.admin_urls")),
    path("notifications/", views.notification_list, name="notification-list"),
    path("notifications/lues/", views.notification_mark_read, name="notification-mark-read"),
    path("session/maintien/", views_session.session_keepalive, name="session-keepalive"),
    # Pro Santé Connect's back-channel logout (server to server, signed logout token).
    path("psc/deconnexion/", psc.backchannel_logout, name="psc-backchannel-logout"),
    path(
        "compte/notifications/",
        views_account.notification_preferences,
        name="account-notifications",
    ),
    path("accueil/mes-patients/", views_gp_home.gp_home, name="gp-home"),
    path("accueil/mes-patients/lus/", views_gp_home.gp_home_mark_read, name="gp-home-read"),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]
