"""Settings of the MIRC portal: one module, every value read from the environment.

Two shapes run from this same file:

* the embedded default (nothing set): SQLite under ``var/``, in-memory channel layer,
  Celery tasks run eagerly in-process, the embedded local archive;
* the production shape: ``DATABASE_URL`` (PostgreSQL), ``REDIS_URL`` (channel layer,
  cache, Celery broker), ``ARCHIVE_URL`` (the regional DICOMweb archive), with
  ``DJANGO_DEBUG=false`` and a ``SECRET_KEY``.

A bad or missing value fails at start-up with django-environ's ImproperlyConfigured,
which names the variable.
"""

from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=True)

if DEBUG:
    # Only the embedded demo gets a default; production must bring its own.
    SECRET_KEY = env.str(
        "SECRET_KEY", default="dev-only-not-secret-9f3c2b7a1e5d4c8b6a0f2e1d3c5b7a9e8d6c4b2a0f1e3"
    )
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
else:
    SECRET_KEY = env.str("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is empty: list the host names the portal answers on.")
# The portal's public address, for the links of e-mails and calendar feeds (no request there).
PORTAL_URL = env.str(
    "PORTAL_URL",
    default="http://127.0.0.1:8000" if DEBUG else f"https://{ALLOWED_HOSTS[0].lstrip('.')}",
).rstrip("/")

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "guardian",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "django_htmx",
    "csp",
    "portal",
    "imaging",
    "rcp",
    "expertise",
    # Above the four apps, which never import it: the demo data and its commands.
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After the messages (the timeout says why it signed you out) and before the second
    # factor (an abandoned session is ended, not sent to set up a factor).
    "portal.middleware.IdleTimeoutMiddleware",
    "portal.middleware.MfaEnforcementMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
AUTH_USER_MODEL = "portal.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "DATABASE_POOL", default=True
):
    # Under ASGI each request runs in a new thread: without a pool, every request would
    # open a new PostgreSQL connection (CONN_MAX_AGE keeps one per thread, so it cannot help).
    # Connections stay open in the pool between requests, and each is checked when lent, so
    # one the server or a proxy closed while idle is replaced instead of failing a request.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        "max_idle": 600,
    }
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several daphne workers and eager tasks write to one file: take the write lock at
    # BEGIN and wait for it instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery broker ----------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

# channels_redis's publish/subscribe layer: a group send is one Redis message, received once
# by each daphne process, where the review rooms fan it out to their own followers
# (imaging/review_hub.py); the list layer ("lists") writes and pops it once per member, which
# a board of 50 or 10 rooms at once cannot afford (issue 13, benchmarks/bench_review.py).
CHANNEL_LAYER_KINDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "lists": "channels_redis.core.RedisChannelLayer",
}
CHANNEL_LAYER_KIND = env.str("CHANNEL_LAYER", default="pubsub")
if CHANNEL_LAYER_KIND not in CHANNEL_LAYER_KINDS:
    raise ImproperlyConfigured("CHANNEL_LAYER must be one of: pubsub, lists.")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": CHANNEL_LAYER_KINDS[CHANNEL_LAYER_KIND],
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env.str("CHANNELS_PREFIX", default="mirc")},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "portal.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_PREFIX", default="mirc"),
        },
        # Decoded and passed-through image frames: give Redis a maxmemory with an LRU
        # policy, or point FRAMES_CACHE_URL at a Redis of its own.
        "frames": {
            "BACKEND": "portal.cache.SharedRedisCache",
            "LOCATION": env.str("FRAMES_CACHE_URL", default=REDIS_URL),
            "KEY_PREFIX": env.str("CACHE_PREFIX", default="mirc") + "-frames",
            "TIMEOUT": 24 * 3600,
        },
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "frames": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "frames",
            "TIMEOUT": 3600,
            # About two CT series of 300 slices of 512x512.
            "OPTIONS": {"MAX_ENTRIES": 1200},
        },
    }

CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or None
# Without a broker the demo runs every task in-process, at once.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
# The demo's server (make demo: python -m portal.logging) runs those in-process tasks after the
# response, in a background thread (portal/background.py), instead of inside the request.
TASKS_IN_BACKGROUND = env.bool("TASKS_IN_BACKGROUND", default=not REDIS_URL)
# Periodic jobs, run by `celery -A portal beat` beside the workers.
CELERY_BEAT_SCHEDULE = {
    "rcp-session-reminders": {
        "task": "rcp.send_session_reminders",
        "schedule": 15 * 60,  # seconds: sessions starting within 48 h get their reminder
    },
    "rcp-close-past-sessions": {
        "task": "rcp.close_past_sessions",
        # Seconds: hourly; a session is closed the day after it (Europe/Paris), with what
        # was discussed, if its coordinator did not close it.
        "schedule": 60 * 60,
    },
    "expertise-deadlines": {
        "task": "expertise.watch_deadlines",
        # Seconds: an urgent request's reminder comes 6 h before its deadline, so a few
        # minutes late is still in time.
        "schedule": 5 * 60,
    },
    "imaging-expired-packages": {
        "task": "imaging.purge_expired_packages",
        # Seconds: hourly; a DICOMDIR package is deleted within the hour after it expires.
        "schedule": 60 * 60,
    },
    "imaging-compute-activity": {
        "task": "imaging.compute_activity",
        # Nightly (UTC), when the portal is quiet: the programme's indicators of the open
        # months, recomputed whole (imaging.activity).
        "schedule": crontab(hour=2, minute=30),
    },
    "imaging-issue-statements": {
        "task": "imaging.issue_statements",
        # Nightly, after the indicators' job has closed the months it closes: each closed
        # month's usage statements, once (imaging.metering).
        "schedule": crontab(hour=3, minute=30),
    },
}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Imaging archive --------------------------------------------------------------------
# Unset: the embedded local archive under var/archive. Set: a DICOMweb base URL.
ARCHIVE_URL = env.str("ARCHIVE_URL", default="")
ARCHIVE_ROOT = env.path("ARCHIVE_ROOT", default=VAR_DIR / "archive")
ARCHIVE_TIMEOUT = env.float("ARCHIVE_TIMEOUT", default=3.0)
# An external viewer launched on a study: a URL template with {dicomweb}, {study_uid} and
# {token}, e.g. https://viewer.example.org/?StudyInstanceUIDs={study_uid}#token={token}.
# The token goes in the #fragment, which browsers never send to a server: in a path or a
# query it would land in access logs, proxies and the history. The viewer sends it back as
# Authorization: Bearer (the portal's viewer does: frontend/src/dicomweb.js).
EXTERNAL_VIEWER_URL = env.str("EXTERNAL_VIEWER_URL", default="")
if "{token}" in EXTERNAL_VIEWER_URL.partition("#")[0]:
    raise ImproperlyConfigured(
        "EXTERNAL_VIEWER_URL puts {token} in the path or query: put it after '#' (#token={token})."
    )

# --- Regional DICOM gateway (manage.py dicom_gateway, imaging/gateway.py) ----------------
# Establishments send to this AE title and port; beyond the association limit the next
# association is refused (A-ASSOCIATE-RJ, local limit exceeded) rather than queued.
DICOM_GATEWAY_PORT = env.int("DICOM_GATEWAY_PORT", default=11112)
DICOM_GATEWAY_AE_TITLE = env.str("DICOM_GATEWAY_AE_TITLE", default="MIRC")
DICOM_GATEWAY_MAX_ASSOCIATIONS = env.int("DICOM_GATEWAY_MAX_ASSOCIATIONS", default=50)
if not 1 <= len(DICOM_GATEWAY_AE_TITLE) <= 16 or DICOM_GATEWAY_MAX_ASSOCIATIONS < 1:
    raise ImproperlyConfigured(
        "DICOM_GATEWAY_AE_TITLE must have 1 to 16 characters and "
        "DICOM_GATEWAY_MAX_ASSOCIATIONS be at least 1."
    )

# TLS on the gateway's DICOM port (PS3.15 Annex B.1, the Secure Transport Connection
# Profile): the certificate and key of the gateway and, to require the establishments' client
# certificates, the CA bundle that signs them. Empty: plain TCP (inside the regional network).
DICOM_GATEWAY_TLS_CERTIFICATE = env.str("DICOM_GATEWAY_TLS_CERTIFICATE", default="")
DICOM_GATEWAY_TLS_KEY = env.str("DICOM_GATEWAY_TLS_KEY", default="")
DICOM_GATEWAY_TLS_CA_CERTIFICATES = env.str("DICOM_GATEWAY_TLS_CA_CERTIFICATES", default="")
if bool(DICOM_GATEWAY_TLS_CERTIFICATE) != bool(DICOM_GATEWAY_TLS_KEY):
    raise ImproperlyConfigured(
        "DICOM_GATEWAY_TLS_CERTIFICATE and DICOM_GATEWAY_TLS_KEY go together."
    )
# A C-FIND answers at most this many matches (the rest is cancelled with a warning), and a
# query without a patient key, accession number or narrow date range is refused: an
# establishment looks up its patients, it does not list the region.
DICOM_GATEWAY_QUERY_MAX_RESULTS = env.int("DICOM_GATEWAY_QUERY_MAX_RESULTS", default=500)

# Prefetch of priors to an establishment's PACS (defaults; each DicomDeclaration may narrow
# them): studies of the last N years, at most this many studies per admission.
PREFETCH_YEARS = env.int("PREFETCH_YEARS", default=5)
PREFETCH_MAX_STUDIES = env.int("PREFETCH_MAX_STUDIES", default=10)

# DICOMDIR packages (imaging.packages): zips of a patient's studies for a doctor who wants
# the images locally, kept under this directory for this many days, then deleted.
PACKAGES_DIR = env.path("PACKAGES_DIR", default=VAR_DIR / "packages")
PACKAGES_KEEP_DAYS = env.int("PACKAGES_KEEP_DAYS", default=7)
if not 1 <= PACKAGES_KEEP_DAYS <= 90:
    raise ImproperlyConfigured("PACKAGES_KEEP_DAYS must be a number of days from 1 to 90.")

# Migration of an existing archive (manage.py archive_import): worker processes.
ARCHIVE_IMPORT_WORKERS = env.int("ARCHIVE_IMPORT_WORKERS", default=4)

# The regional programme's indicators (imaging.activity, computed nightly): a month's figures
# stop changing once computed this many days after its end; a new study is a possible repeat
# of a study of the same modality and body part made elsewhere within its modality's window
# (days; "CT=30,MR=30,CR=7,DX=7"; a modality not listed is not checked).
ACTIVITY_MONTH_CLOSES_AFTER_DAYS = env.int("ACTIVITY_MONTH_CLOSES_AFTER_DAYS", default=15)
ACTIVITY_REPEAT_WINDOWS = {}
for _item in env.str("ACTIVITY_REPEAT_WINDOWS", default="CT=30,MR=30,CR=7,DX=7").split(","):
    _modality, _equals, _days = _item.strip().partition("=")
    if not _modality or not _days.strip().isdigit():
        raise ImproperlyConfigured(
            f"ACTIVITY_REPEAT_WINDOWS: {_item!r} is not MODALITY=DAYS (e.g. CT=30,CR=7)."
        )
    ACTIVITY_REPEAT_WINDOWS[_modality.strip().upper()] = int(_days)
del _item, _modality, _equals, _days
if ACTIVITY_MONTH_CLOSES_AFTER_DAYS < 0:
    raise ImproperlyConfigured("ACTIVITY_MONTH_CLOSES_AFTER_DAYS must be 0 or more.")

# Usage metering (imaging.metering, issue 17): the price of each service of the monthly
# statements, in euros, "archive=0.80,sharing=0.20,storage=0.05": per exam archived, per exam
# consulted by another establishment, per gigabyte stored at the month's end. Every service
# is priced (0 is a price); a statement line keeps the price it was issued with.
METERING_SERVICES = ("archive", "sharing", "storage")
METERING_PRICES = {}
for _item in env.str("METERING_PRICES", default="archive=0.80,sharing=0.20,storage=0.05").split(
    ","
):
    _service, _equals, _price = _item.strip().partition("=")
    try:
        _euros = Decimal(_price.strip())
    except ArithmeticError:
        _euros = None
    if (
        _service.strip() not in METERING_SERVICES
        or _euros is None
        or not _euros.is_finite()
        or _euros < 0
        or _euros.as_tuple().exponent < -4
        or _service.strip() in METERING_PRICES
    ):
        raise ImproperlyConfigured(
            f"METERING_PRICES: {_item!r} is not SERVICE=EUROS with a service among "
            f"{', '.join(METERING_SERVICES)}, once each (e.g. archive=0.80,sharing=0.20)."
        )
    METERING_PRICES[_service.strip()] = _euros
del _item, _service, _equals, _price, _euros
if set(METERING_PRICES) != set(METERING_SERVICES):
    raise ImproperlyConfigured(
        f"METERING_PRICES: give a price for each of {', '.join(METERING_SERVICES)}."
    )

# Limits on uploaded images (bytes and counts); the reverse proxy must allow as much.
INGEST_MAX_FILE_BYTES = env.int("INGEST_MAX_FILE_BYTES", default=512 * 1024**2)
INGEST_MAX_UPLOAD_BYTES = env.int("INGEST_MAX_UPLOAD_BYTES", default=4 * 1024**3)
INGEST_MAX_ZIP_ENTRIES = env.int("INGEST_MAX_ZIP_ENTRIES", default=20_000)
INGEST_MAX_ZIP_RATIO = env.int("INGEST_MAX_ZIP_RATIO", default=200)
# Untrusted pixels are decoded in sandbox workers (imaging.sandbox): each process keeps this
# many, each replaced after this many jobs (and after any crash, timeout or memory blow-up).
SANDBOX_POOL_SIZE = env.int("SANDBOX_POOL_SIZE", default=2)
SANDBOX_POOL_MAX_JOBS = env.int("SANDBOX_POOL_MAX_JOBS", default=200)
if SANDBOX_POOL_SIZE < 1 or SANDBOX_POOL_MAX_JOBS < 1:
    raise ImproperlyConfigured("SANDBOX_POOL_SIZE and SANDBOX_POOL_MAX_JOBS must be >= 1.")
# A CT folder is hundreds of files; uploads stream to temporary files, not to memory.
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=5000)

# One WADO-RS frames answer: viewers ask one frame at a time, a cine loop a few hundred at
# most; the byte cap bounds what one request can make the server hold (413 beyond).
DICOMWEB_MAX_FRAMES_PER_REQUEST = env.int("DICOMWEB_MAX_FRAMES_PER_REQUEST", default=1000)
DICOMWEB_MAX_ANSWER_BYTES = env.int("DICOMWEB_MAX_ANSWER_BYTES", default=256 * 1024**2)
if DICOMWEB_MAX_FRAMES_PER_REQUEST < 1 or DICOMWEB_MAX_ANSWER_BYTES < 1024**2:
    raise ImproperlyConfigured(
        "DICOMWEB_MAX_FRAMES_PER_REQUEST must be >= 1 and DICOMWEB_MAX_ANSWER_BYTES >= 1 MiB."
    )

# --- HL7 v2 identity feed (manage.py hl7_listener) -----------------------------------------
# MLLP port (2575 is the IANA port for HL7 over MLLP); a message larger than the limit is
# refused and its connection closed; a frame left open is dropped after the idle timeout.
HL7_LISTENER_HOST = env.str("HL7_LISTENER_HOST", default="127.0.0.1")
HL7_LISTENER_PORT = env.int("HL7_LISTENER_PORT", default=2575)
HL7_MAX_MESSAGE_BYTES = env.int("HL7_MAX_MESSAGE_BYTES", default=1024**2)
HL7_READ_TIMEOUT_SECONDS = env.float("HL7_READ_TIMEOUT_SECONDS", default=30.0)
if HL7_MAX_MESSAGE_BYTES < 1024 or HL7_READ_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured(
        "HL7_MAX_MESSAGE_BYTES must be >= 1024 and HL7_READ_TIMEOUT_SECONDS > 0."
    )

# --- National directory (manage.py directory_import) ---------------------------------------
# The region whose professionals are kept: a person with one activity in these departments.
DIRECTORY_DEPARTMENTS = env.list(
    "DIRECTORY_DEPARTMENTS", default=["18", "28", "36", "37", "41", "45"]
)
if not all(code.strip().isalnum() and len(code.strip()) <= 3 for code in DIRECTORY_DEPARTMENTS):
    raise ImproperlyConfigured(
        "DIRECTORY_DEPARTMENTS must list department codes separated by commas (e.g. 37,41)."
    )
# The scheduled refresh (portal.refresh_directory, Celery beat): an extract file, or a directory
# where the newest PS_LibreAcces_Personne_activite_*.txt is taken; empty: no scheduled refresh.
DIRECTORY_EXTRACT_PATH = env.str("DIRECTORY_EXTRACT_PATH", default="").strip()
if DIRECTORY_EXTRACT_PATH and not Path(DIRECTORY_EXTRACT_PATH).is_absolute():
    raise ImproperlyConfigured(
        "DIRECTORY_EXTRACT_PATH must be an absolute path (a file or a directory), or empty."
    )
# The hour (UTC, 0-23) of the nightly refresh: the national extract is published once a day.
DIRECTORY_REFRESH_HOUR = env.int("DIRECTORY_REFRESH_HOUR", default=2)
if not 0 <= DIRECTORY_REFRESH_HOUR <= 23:
    raise ImproperlyConfigured("DIRECTORY_REFRESH_HOUR must be an hour from 0 to 23.")
# The hour (UTC, 0-23) of the daily digest of notifications (portal.send_digests), for those
# who chose one digest a day rather than an e-mail each: before the GP's surgery opens.
DIGEST_HOUR = env.int("DIGEST_HOUR", default=7)
if not 0 <= DIGEST_HOUR <= 23:
    raise ImproperlyConfigured("DIGEST_HOUR must be an hour from 0 to 23.")

# Live shared review: a presenter whose connection drops keeps control this long, so that a
# page reload or a network glitch does not hand the meeting to nobody.
REVIEW_PRESENTER_GRACE_SECONDS = env.float("REVIEW_PRESENTER_GRACE_SECONDS", default=10.0)

# --- Files --------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Email ---------------------------------------------------------------------------------
vars().update(
    env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25")
)
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL", default="Portail MIRC <ne-pas-repondre@localhost>"
)
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Internationalisation -------------------------------------------------------------------
LANGUAGE_CODE = "fr"
LANGUAGES = [("fr", _("French")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "Europe/Paris"
USE_TZ = True

# --- Authentication: allauth, MFA, OpenID Connect, guardian ----------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

ACCOUNT_ADAPTER = "portal.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "portal.adapters.SocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = True
ACCOUNT_RATE_LIMITS = {
    # Per client IP and per e-mail: the 6th wrong password within 15 minutes is refused
    # even when it would be right.
    "login_failed": env.str("LOGIN_FAILED_RATE", default="20/15m/ip,5/15m/key"),
    "login": "60/m/ip",
}

MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_TOTP_ISSUER = "MIRC Centre-Val de Loire"
# A code read on the phone just before its 30 seconds end is still taken (RFC 6238 §5.2: one
# time step of delay); each code is taken once (allauth remembers the used ones).
MFA_TOTP_TOLERANCE = 1
# The demo (make demo) runs with DEBUG off on plain http://127.0.0.1 and sets this.
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = env.bool("MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN", default=DEBUG)
MFA_PASSKEY_LOGIN_ENABLED = False
# Who must pass a second factor before using the portal (pages and WebSockets): "none",
# "staff" or "all". Health data needs strong authentication (PGSSI-S), so production
# defaults to "all"; the embedded demo (DEBUG) defaults to "none", its personas signing in
# with a password. A login through Pro Santé Connect at a strong palier (PSC_STRONG_LEVELS:
# CPS card or e-CPS) counts as strong authentication already.
MFA_ENFORCE = env.str("MFA_ENFORCE", default="none" if DEBUG else "all")
if MFA_ENFORCE not in {"none", "staff", "all"}:
    raise ImproperlyConfigured("MFA_ENFORCE must be one of: none, staff, all.")

OIDC_SERVER_URL = env.str("OIDC_SERVER_URL", default="")
PSC_PROVIDER_ID = env.str("OIDC_PROVIDER_ID", default="psc")
SOCIALACCOUNT_PROVIDERS = {"openid_connect": {"OAUTH_PKCE_ENABLED": True, "APPS": []}}
if OIDC_SERVER_URL:
    SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"].append(
        {
            "provider_id": PSC_PROVIDER_ID,
            "name": env.str("OIDC_PROVIDER_NAME", default="Pro Santé Connect"),
            "client_id": env.str("OIDC_CLIENT_ID"),
            "secret": env.str("OIDC_CLIENT_SECRET"),
            "settings": {
                "server_url": OIDC_SERVER_URL,
                "oauth_pkce_enabled": True,
                "token_auth_method": env.str(
                    "OIDC_TOKEN_AUTH_METHOD", default="client_secret_basic"
                ),
                # Pro Santé Connect's scopes: its userinfo then carries SubjectNameID (the
                # national identifier), SubjectRefPro (practice sites) and the palier.
                "scope": env.str("OIDC_SCOPES", default="openid scope_all")
                .replace(",", " ")
                .split(),
            },
        }
    )
# Pro Santé Connect (portal/psc.py). The authentication levels (Palier_Authentification, before
# its "^OID") that count as strong authentication by themselves: APPPRIP3 is the CPS card or the
# e-CPS app. A sign-in at any other level must still pass the portal's second factor.
PSC_STRONG_LEVELS = frozenset(env.list("PSC_STRONG_LEVELS", default=["APPPRIP3"]))
# The sign-in page's form posts to the portal, which redirects the browser to the provider's
# authorization endpoint: the CSP's form-action must allow that origin, or the browser stops the
# redirect. PSC's authorization endpoint is not on its discovery URL's host: set them all.
OIDC_AUTHORIZATION_ORIGINS = env.list(
    "OIDC_AUTHORIZATION_ORIGINS",
    default=["{0.scheme}://{0.netloc}".format(urlsplit(OIDC_SERVER_URL))]
    if OIDC_SERVER_URL
    else [],
)
# Whom a professional refused at sign-in (not in the directory, or no longer active) contacts.
PSC_SUPPORT_EMAIL = env.str("PSC_SUPPORT_EMAIL", default="support@mirc.test")
SOCIALACCOUNT_ONLY = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_LOGIN_ON_GET = False

# No guardian "AnonymousUser" row: anonymous visitors never hold object permissions.
ANONYMOUS_USER_NAME = None

# --- Security --------------------------------------------------------------------------------
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=10 * 3600)
# A session without user activity for this long (seconds) is ended; the page warns two
# minutes before (static/js/idle.js). SESSION_COOKIE_AGE stays the cap of a working day.
SESSION_IDLE_TIMEOUT = env.int("SESSION_IDLE_TIMEOUT", default=30 * 60)
if SESSION_IDLE_TIMEOUT <= 120:
    raise ImproperlyConfigured(
        "SESSION_IDLE_TIMEOUT must be more than 120 seconds: the page warns two minutes before."
    )
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The portal's own page for a refused form (templates/403.html), not Django's technical one.
CSRF_FAILURE_VIEW = "portal.views_errors.csrf_failure"
if not DEBUG:
    # Only the demo (make demo: DEBUG off over plain http://127.0.0.1) turns these off.
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe /health/ over plain HTTP inside the private network.
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    # daphne runs behind a TLS-terminating reverse proxy that sets this header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Number of reverse proxies in front of daphne whose X-Forwarded-For we trust (audit IPs).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0 if DEBUG else 1)
# How long the audit trail keeps an event before `manage.py audit_purge` may delete it.
# Three years: the CNIL's recommendation on logging (deliberation 2021-122) allows six
# months to one year in general and up to three years when the logs serve to control what
# authorised users do; that is this trail's purpose (who opened which patient's record,
# asked for by the DPO or by a patient long after the care). Six months is the floor:
# the CNIL's, and the code de la santé publique's for access traces to patient data in
# health establishments (R6113-9-2).
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=3 * 365)
if AUDIT_RETENTION_DAYS < 183:
    raise ImproperlyConfigured(
        "AUDIT_RETENTION_DAYS must be at least 183: access traces are kept six months at least."
    )

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # The viewer's image decoders are WebAssembly (Cornerstone3D's codecs), served here.
        "script-src": [SELF, "'wasm-unsafe-eval'"],
        "worker-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF, *OIDC_AUTHORIZATION_ORIGINS],
        "frame-ancestors": [NONE],
    }
}

# Every handler carries the redaction filter (portal/logging.py): viewer tokens sent as
# ?token= and Authorization headers never reach a log line. Django's default handlers
# (its console and mail_admins on "django", its runserver lines on "django.server") are
# replaced by these, so that no record bypasses the filter.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "portal.logging.RedactSecrets"}},
    "formatters": {
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_secrets"]},
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": [], "level": "INFO"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # daphne's access log, one line per request (`python -m portal.logging`, make demo).
        "daphne.access": {"level": "INFO"},
        # dicomweb-client logs every request at INFO, WeasyPrint every rendering step,
        # Celery every eager task.
        "dicomweb_client": {"level": "WARNING"},
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
        "celery": {"level": "WARNING"},
    },
}
