from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RcpConfig(AppConfig):
    name = "rcp"
    verbose_name = _("Multidisciplinary meetings")

    def seed_demo(self, stdout=None) -> int:
        """Demo committees, sessions and cases (called by ``manage.py seed_demo``)."""
        from rcp.demo import seed

        return seed(stdout=stdout)
