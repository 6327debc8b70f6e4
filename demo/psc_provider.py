"""The stand-in for Pro Santé Connect of the tests and the demo: tests/oidc_provider/server.js
(panva's oidc-provider on Node.js) started on loopback, with its client (the portal) and its
accounts written as JSON, the accounts' claims shaped like PSC's userinfo.

Used by tests/test_psc.py and by ``manage.py run_demo`` (when ``make setup`` installed the
provider's node_modules). Never a production component: its keys are made up at each start.
"""

from __future__ import annotations

import hashlib
import json
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from django.urls import reverse

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_DIR = ROOT / "tests" / "oidc_provider"
# PSC's strong palier (CPS card or e-CPS) and, for the tests, a weaker one.
STRONG_PALIER = "APPPRIP3^1.2.250.1.213.1.5.1.1.1"
WEAK_PALIER = "APPPRIP1^1.2.250.1.213.1.5.1.1.1"
START_TIMEOUT = 30.0


def installed() -> bool:
    return bool(shutil.which("node")) and (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir()


def client(*, base_url: str, client_id: str, secret: str, provider_id: str = "psc") -> dict:
    """The portal as the provider's client: code flow, PKCE (the provider requires it), secret
    sent in the Authorization header, back-channel logout to the portal's endpoint."""
    callback = reverse("openid_connect_callback", kwargs={"provider_id": provider_id})
    return {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [f"{base_url}{callback}"],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "backchannel_logout_uri": f"{base_url}{reverse('psc-backchannel-logout')}",
        "backchannel_logout_session_required": True,
    }


def account(
    *,
    login: str,
    national_id: str,
    given_name: str,
    family_name: str,
    finess: tuple[str, ...] | list[str] = (),
    palier: str = STRONG_PALIER,
    profession: str = "10",
    password: str | None = None,
) -> dict:
    """A PSC account: ``login`` (and ``password`` if any) on the provider's form; claims as PSC's
    userinfo gives them (``sub`` opaque, ``SubjectNameID`` the national identifier)."""
    sub = "psc-" + hashlib.sha256(national_id.encode()).hexdigest()[:24]
    activities = [
        {
            "codeModeExercice": "S",
            "codeSecteurDactivite": "SA01",
            "numeroFinessSite": number,
            "numeroFinessetablissementJuridique": "",
        }
        for number in finess
    ]
    entry = {
        "login": login,
        "claims": {
            "sub": sub,
            "SubjectNameID": national_id,
            "preferred_username": national_id,
            "given_name": given_name,
            "family_name": family_name,
            "Palier_Authentification": palier,
            "SubjectRole": [f"{profession}^1.2.250.1.213.1.1.5.5"],
            "SubjectRefPro": {
                "exercices": [
                    {
                        "codeProfession": profession,
                        "nomDexercice": family_name.upper(),
                        "prenomDexercice": given_name.upper(),
                        "activities": activities,
                    }
                ]
            },
        },
    }
    if password:
        entry["password"] = password
    return entry


def accounts_from_directory(limit: int = 200) -> list[dict]:
    """One PSC account per active RPPS person of the directory (the demo's), logging in with
    the RPPS; their practice sites from the directory's activities."""
    from portal.directory_models import DirectoryIdType, DirectoryPerson

    persons = (
        DirectoryPerson.objects.filter(is_active=True, id_type=DirectoryIdType.RPPS)
        .exclude(rpps="")
        .prefetch_related("activities")
        .order_by("last_name", "first_name")[:limit]
    )
    return [
        account(
            login=person.rpps,
            national_id=person.national_id,
            given_name=person.first_name.title(),
            family_name=person.last_name.upper(),
            finess=sorted({a.finess_site for a in person.activities.all() if a.finess_site}),
            profession=person.profession_code or "10",
        )
        for person in persons
    ]


@dataclass
class RunningProvider:
    process: subprocess.Popen
    issuer: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    *,
    clients: list[dict],
    accounts: list[dict],
    workdir: Path,
    port: int = 0,
    host: str = "127.0.0.1",
    **popen,
) -> RunningProvider:
    """Starts the provider and returns once it listens (its issuer URL read from its stdout)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "psc-clients.json").write_text(json.dumps(clients))
    (workdir / "psc-accounts.json").write_text(json.dumps(accounts, ensure_ascii=False))
    log = open(workdir / "psc-provider.log", "ab")  # noqa: SIM115 - the child's, kept open
    process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [
            shutil.which("node") or "node",
            str(PROVIDER_DIR / "server.js"),
            "--clients",
            str(workdir / "psc-clients.json"),
            "--accounts",
            str(workdir / "psc-accounts.json"),
            "--port",
            str(port),
            "--host",
            host,
        ],
        cwd=PROVIDER_DIR,
        stdout=subprocess.PIPE,
        stderr=log,
        **popen,
    )
    log.close()
    running = RunningProvider(process, "", workdir / "psc-provider.log")
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not running.issuer:
            if process.poll() is not None or time.monotonic() > deadline:
                running.stop()
                raise RuntimeError(
                    f"the OpenID Connect provider did not start: {running.log_tail()}"
                )
            if selector.select(timeout=0.2):
                line = process.stdout.readline()
                if line:
                    running.issuer = json.loads(line)["issuer"]
    return running
