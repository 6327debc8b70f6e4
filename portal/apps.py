from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = _("Portal")

    def ready(self):
        # Authentication outcomes only exist as django.contrib.auth signals: the one place
        # where this project listens to signals.
        from portal import signals  # noqa: F401
        from portal.home import register_portal_panels

        register_portal_panels()

    def read_only_patient_grant(self, user):
        """The patients ``user`` holds an emergency access to: asked by imaging's reads
        (portal.access.read_only_patient_grants), so that a study opened under it, through
        the viewer or DICOMweb, is audited with the emergency purpose."""
        from portal.models import AuditPurpose
        from portal.selectors import emergency_patient_ids

        return AuditPurpose.EMERGENCY, emergency_patient_ids(user)
