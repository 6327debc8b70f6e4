"""The gateway in TLS (PS3.15 B.1, Secure Transport Connection Profile) with dcmtk's echoscu
as the establishment: throwaway certificates made by the test (a regional CA, the gateway's
server certificate, an establishment's client certificate, and one from an unknown CA)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.db import connections

from imaging.gateway import Gateway, tls_context
from imaging.management.commands.dicom_gateway import tls_state
from imaging.models import CallingAETitle, DicomDeclaration
from tests.dicom_peers import require_dcmtk, serve_in_thread, settling, stop_in_thread

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]

TOURS_AE = "CHRU_TOURS_PACS"


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(name, key, *, issuer=None, issuer_key=None, ca=False, server=False):
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(directory, name, key, certificate):
    key_path = directory / f"{name}.key"
    cert_path = directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A regional CA, the gateway's and Tours' certificates, and an outsider's from another CA;
    for the gateway's own associations, Tours' PACS and an impostor PACS from that other CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _certificate("MIRC test CA", ca_key, ca=True)
    rogue_key = _key()
    rogue = _certificate("Unknown CA", rogue_key, ca=True)
    paths = {"ca": _write(directory, "ca", ca_key, ca)[1]}
    for name, issuer, issuer_key, server in (
        ("gateway", ca, ca_key, True),
        ("tours", ca, ca_key, False),
        ("outsider", rogue, rogue_key, False),
        ("tours_pacs", ca, ca_key, True),
        ("impostor_pacs", rogue, rogue_key, True),
    ):
        key = _key()
        paths[name] = _write(
            directory,
            name,
            key,
            _certificate(name, key, issuer=issuer, issuer_key=issuer_key, server=server),
        )
    return paths


@pytest.fixture
def start_tls_gateway(world, settings, pki):
    require_dcmtk("echoscu")
    declaration = DicomDeclaration.objects.create(establishment=world.tours)
    CallingAETitle.objects.create(declaration=declaration, ae_title=TOURS_AE)
    connection = connections["default"]
    connection.inc_thread_sharing()
    ports = []

    def start(*, require_client_certificates: bool) -> int:
        settings.DICOM_GATEWAY_TLS_KEY, settings.DICOM_GATEWAY_TLS_CERTIFICATE = pki["gateway"]
        settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES = (
            pki["ca"] if require_client_certificates else ""
        )
        gateway = Gateway(
            ae_title="MIRC",
            max_associations=5,
            share_connections={"default": connection},
            ssl_context=tls_context(),
        )
        ports.append(serve_in_thread(gateway))
        return ports[-1]

    yield start
    for port in ports:
        stop_in_thread(port)
    connection.dec_thread_sharing()


def _echoscu(port, *tls):
    with settling(port):
        return subprocess.run(
            ["echoscu", "-aet", TOURS_AE, "-aec", "MIRC", "-to", "10", "-ta", "10", "-td", "10"]
            + [*tls, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def test_an_establishment_echoes_the_gateway_in_tls_and_plain_tcp_gets_nothing(
    start_tls_gateway, pki
):
    port = start_tls_gateway(require_client_certificates=False)
    tours_key, tours_cert = pki["tours"]
    answer = _echoscu(port, "+tls", tours_key, tours_cert, "+cf", pki["ca"])
    assert answer.returncode == 0, answer.stderr
    # Anonymous TLS is enough while no CA bundle is configured.
    assert _echoscu(port, "+tla", "+cf", pki["ca"]).returncode == 0
    # Plain DICOM on the TLS port: no association.
    assert _echoscu(port).returncode != 0
    # A client that does not trust the gateway's certificate stops there.
    outsider_key, outsider_cert = pki["outsider"]
    assert _echoscu(port, "+tls", outsider_key, outsider_cert, "+cf", outsider_cert).returncode
    # And the gateway keeps serving.
    assert _echoscu(port, "+tls", tours_key, tours_cert, "+cf", pki["ca"]).returncode == 0


def test_with_a_ca_bundle_only_certified_establishments_connect(start_tls_gateway, pki):
    port = start_tls_gateway(require_client_certificates=True)
    tours_key, tours_cert = pki["tours"]
    assert _echoscu(port, "+tls", tours_key, tours_cert, "+cf", pki["ca"]).returncode == 0
    # No client certificate, or one from another CA: the handshake fails.
    assert _echoscu(port, "+tla", "+cf", pki["ca"]).returncode != 0
    outsider_key, outsider_cert = pki["outsider"]
    assert _echoscu(port, "+tls", outsider_key, outsider_cert, "+cf", pki["ca"]).returncode != 0
    assert _echoscu(port, "+tls", tours_key, tours_cert, "+cf", pki["ca"]).returncode == 0


def test_the_command_says_the_tls_state(settings, pki):
    settings.DICOM_GATEWAY_TLS_CERTIFICATE = ""
    assert tls_state() == "TLS off (plain TCP)"
    settings.DICOM_GATEWAY_TLS_KEY, settings.DICOM_GATEWAY_TLS_CERTIFICATE = pki["gateway"]
    settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES = ""
    assert tls_state() == "TLS on, client certificates not required"
    settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES = pki["ca"]
    assert tls_state() == "TLS on, client certificates required"
