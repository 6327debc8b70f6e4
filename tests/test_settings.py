"""Settings read from the environment, production mode, /health/, and local-only assets."""

import os
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from django.test import Client
from django.urls import reverse

from tests.conftest import client_for

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "SECRET_KEY",
            "DJANGO_DEBUG",
            "ALLOWED_HOSTS",
            "DATABASE_URL",
            "REDIS_URL",
            "MFA_ENFORCE",
            "SESSION_IDLE_TIMEOUT",
        }
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _run(["manage.py", "check"], DJANGO_DEBUG="false", ALLOWED_HOSTS="portail.example.org")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = _run(
        ["manage.py", "check"], DJANGO_DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50)
    )
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_a_bad_value_is_named_at_start_up():
    result = _run(["manage.py", "check"], MFA_ENFORCE="sometimes")
    assert result.returncode != 0
    assert "MFA_ENFORCE" in result.stderr


PRINT_AUTH_SETTINGS = (
    "from django.conf import settings; print(settings.MFA_ENFORCE, settings.SESSION_IDLE_TIMEOUT)"
)


def test_production_demands_a_second_factor_from_everyone_by_default():
    result = _run(
        ["manage.py", "shell", "-c", PRINT_AUTH_SETTINGS],
        DJANGO_DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="portail.example.org",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["all", "1800"]


def test_the_demo_signs_in_with_a_password_alone_by_default():
    result = _run(["manage.py", "shell", "-c", PRINT_AUTH_SETTINGS])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["none", "1800"]


def test_an_idle_timeout_shorter_than_its_warning_is_refused_at_start_up():
    result = _run(["manage.py", "check"], SESSION_IDLE_TIMEOUT="60")
    assert result.returncode != 0
    assert "SESSION_IDLE_TIMEOUT" in result.stderr


def test_deployment_checks_pass_in_production_mode():
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="portail.example.org",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_reports_every_service(db):
    response = Client().get(reverse("health"))
    assert response.status_code == 200
    assert response.json() == {
        "database": "ok",
        "channel_layer": "ok",
        "archive": "ok",
        "task_queue": "ok",
    }


def test_health_names_the_service_that_is_down(db, settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.ARCHIVE_URL = f"http://127.0.0.1:{port}/dicom-web"
    response = Client().get(reverse("health"))
    assert response.status_code == 503
    state = response.json()
    # Only ok/error for anonymous callers: the detail is for staff (tests/test_health.py).
    assert state["archive"] == "error"
    assert state["database"] == "ok"


def test_pages_carry_a_strict_content_security_policy(world):
    response = client_for(world.oncologist.user).get(reverse("home"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"


def test_every_asset_is_served_by_the_portal_itself(world):
    page = client_for(world.oncologist.user).get(reverse("home")).content.decode()
    assets = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="([^"]+)"', page)
    assert assets, "the page loads no asset at all?"
    assert all(asset.startswith("/") and not asset.startswith("//") for asset in assets), assets
    client = Client()
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        response.close()


def test_no_inline_script_in_pages(world):
    page = client_for(world.oncologist.user).get(reverse("patient-detail", args=[world.patient.pk]))
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.content.decode(), re.S)
    assert all("src=" in attrs or not body.strip() for attrs, body in scripts)


def test_french_by_default_english_on_request(world):
    client = client_for(world.oncologist.user)
    assert client.get(reverse("home"))["Content-Language"] == "fr"
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert client.get(reverse("home"))["Content-Language"] == "en"
