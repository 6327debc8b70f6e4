# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test lint messages catalogue viewer worker clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Compiles the translation catalogues (pure Python, no GNU gettext needed), when they changed:
# CI's two suites start at once and must not rewrite a catalogue the other is reading.
MESSAGES := locale/fr/LC_MESSAGES/django.mo
$(MESSAGES): locale/fr/LC_MESSAGES/django.po $(INSTALLED)
	$(BIN)/pybabel compile --domain django --directory locale --statistics
	touch $@

messages: $(MESSAGES)

# Refreshes the French catalogue from the source (GNU gettext needed): new strings appear
# untranslated, gone ones leave, locations follow the code. Translate what is new (the suite
# refuses an empty or fuzzy entry: tests/test_i18n.py), then `make messages`.
catalogue: $(INSTALLED)
	DJANGO_DEBUG=true $(BIN)/python manage.py makemessages -l fr --no-obsolete \
		--ignore=.venv --ignore=staticfiles --ignore=tests --ignore=node_modules \
		--ignore=benchmarks --ignore=frontend

# The viewer (Cornerstone3D) bundled by Vite from frontend/ into static/build/ (not committed),
# with the indicator pages' charts (Chart.js, static/build/charts.js) from the same build.
VIEWER := static/build/viewer.js
$(VIEWER): frontend/package.json frontend/package-lock.json frontend/vite.config.js $(shell find frontend/src frontend/scripts -type f 2>/dev/null)
	@command -v npm >/dev/null || { echo "npm (Node.js 20 or newer) is needed to build the viewer"; exit 1; }
	cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build
	touch $@

viewer: $(VIEWER)

# The stand-in for Pro Santé Connect (panva's oidc-provider on Node.js) of the tests and the demo.
PSC_PROVIDER := tests/oidc_provider/node_modules/.package-lock.json
$(PSC_PROVIDER): tests/oidc_provider/package.json tests/oidc_provider/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20 or newer) is needed for the test OpenID Connect provider"; exit 1; }
	cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(INSTALLED) messages $(VIEWER) $(PSC_PROVIDER)
	mkdir -p var

# The demo runs as production does, DEBUG off: the portal's own error pages, never Django's
# technical ones (which list the URL patterns). It is served over plain http://127.0.0.1, so
# no TLS redirect and no secure-only cookies; e-mails go to the console; its secret key is
# generated once into var/ (never committed); static files are collected for WhiteNoise.
DEMO_SECRET := var/demo-secret-key
DEMO_ENV = DJANGO_DEBUG=false SECRET_KEY="$$(cat $(DEMO_SECRET))" \
	ALLOWED_HOSTS='127.0.0.1,localhost,[::1]' PORTAL_URL=http://127.0.0.1:$(PORT) \
	SECURE_SSL_REDIRECT=false SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false \
	SECURE_HSTS_SECONDS=0 TRUSTED_PROXY_COUNT=0 MFA_ENFORCE=$${MFA_ENFORCE:-none} \
	MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN=true EMAIL_URL=consolemail://

$(DEMO_SECRET):
	mkdir -p var
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@

demo: setup $(DEMO_SECRET)
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo --force
	$(DEMO_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@# Three servers, supervised by run_demo (Ctrl-C stops all three): daphne, with its
	@# access log going through Python logging, which redacts viewer tokens; the DICOM
	@# gateway (DICOM_GATEWAY_PORT, 11112) and the HL7 listener (HL7_LISTENER_PORT, 2575).
	exec env $(DEMO_ENV) $(BIN)/python manage.py run_demo --port $(PORT)

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

# Production shape: a Celery worker beside the daphne processes (needs REDIS_URL).
worker: setup
	$(BIN)/celery -A portal worker --loglevel=INFO

clean:
	rm -rf $(VENV) staticfiles .pytest_cache static/build frontend/node_modules tests/oidc_provider/node_modules
