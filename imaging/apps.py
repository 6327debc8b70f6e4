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

    def seed_demo(self, stdout=None) -> int:
        """Demo studies of the demo patients (called by ``manage.py seed_demo``)."""
        from imaging.demo import seed

        return seed(stdout=stdout)
