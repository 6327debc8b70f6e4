from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ImagingConfig(AppConfig):
    name = "imaging"
    verbose_name = _("Imaging")

    def ready(self):
        # Its part of the home page (portal.home: portal cannot import this app).
        from imaging import home

        home.register()
        # How the audit trail names its objects (portal.audit_labels).
        from imaging import audit_labels

        audit_labels.register_labels()
        # An admission sends the patient's priors to the establishment's PACS.
        from imaging.prefetch import on_patient_admitted
        from portal.events import patient_admitted

        patient_admitted.connect(on_patient_admitted, dispatch_uid="imaging.prefetch")

    def patient_panel(self, *, user, patient):
        """The patient page's panel of shares with doctors outside the portal
        (portal.selectors.patient_panels, which must not import this app)."""
        from imaging.share_panel import patient_panel

        return patient_panel(user=user, patient=patient)

    def portal_roles(self):
        """What this app adds to the roles of portal.roles: the regional programme reads every
        establishment's imaging indicators and usage statements; a director his
        establishments' indicators (hence scoped: imaging.permissions.activity_establishments
        limits him to his affiliations); a billing office its establishments' statements."""
        return {
            "programme": ["imaging.view_activitymonth", "imaging.view_statement"],
            "establishment_director": ["imaging.view_establishment_activity"],
            "billing": ["imaging.view_affiliated_statements"],
        }

    def portal_role_details(self):
        return {
            "programme": {"label": _("Regional programme"), "establishment_scoped": False},
            "establishment_director": {
                "label": _("Establishment director"),
                "establishment_scoped": True,
            },
        }

    def health_checks(self) -> dict:
        """The regional archive, checked by the health endpoint (portal.health)."""
        from imaging.archive import archive_health

        return {"archive": archive_health}

    def merge_patient(self, *, source, target):
        """Two records of one person merged (portal.services.patient_merge, which must not
        import this app): the survivor takes the studies, uploads, review rooms. Viewer
        tokens scoped to the merged record are revoked, not moved: moved, a token would open
        the survivor's studies that it was never issued for."""
        from django.utils import timezone

        from imaging.models import ArchiveSync, ViewerToken
        from portal.models import Patient

        ViewerToken.objects.filter(patient=source, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        # The survivor's next dossier visit asks the archive again.
        ArchiveSync.objects.filter(patient__in=[source, target]).delete()
        # Every other row of this app that names a patient (studies, uploads, review rooms,
        # prefetches) moves, including those of models added later.
        for model in self.get_models():
            for field in model._meta.get_fields():
                if (
                    field.many_to_one
                    and field.related_model is Patient
                    and model is not ViewerToken
                ):
                    model.objects.filter(**{field.name: source}).update(**{field.name: target})
