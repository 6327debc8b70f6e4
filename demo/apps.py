from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Installed only for its management commands (seed_demo, run_demo, demo_totp,
    demo_dicom); it has no models."""

    name = "demo"
