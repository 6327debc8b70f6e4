from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ExpertiseConfig(AppConfig):
    name = "expertise"
    verbose_name = _("Tele-expertise")

    def seed_demo(self, stdout=None) -> int:
        """Demo pools and requests in every state (called by ``manage.py seed_demo``)."""
        from expertise.demo import seed

        return seed(stdout=stdout)
