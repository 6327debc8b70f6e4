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
