"""Images leaving for an establishment's PACS over TLS (PS3.15 B.1): the prefetch's sender and
the gateway's C-MOVE, with dcmtk's storescp in TLS as the PACS. It checks the portal's
certificate (mutual TLS, dcmtk's default); the portal checks the PACS's against the regional
CA bundle. The certificates are the throwaway ones of tests/test_dicom_gateway_tls.py."""

import pydicom
import pytest

from imaging.dicom_send import Destination, DestinationUnreachable, send_instances
from imaging.models import Instance
from tests.dicom_peers import StoreSCP
from tests.test_dicom_gateway_qr import _movescu, region  # noqa: F401 - fixture
from tests.test_dicom_gateway_tls import pki  # noqa: F401 - fixture
from tests.test_dicom_send import _received, archived  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]


def _tls_pacs(directory, pki, certificate="tours_pacs"):  # noqa: F811
    key, cert = pki[certificate]
    return StoreSCP(directory, options=["+xa", "+tls", key, cert, "+cf", pki["ca"]])


@pytest.fixture
def regional_tls(settings, pki):  # noqa: F811
    settings.DICOM_GATEWAY_TLS_KEY, settings.DICOM_GATEWAY_TLS_CERTIFICATE = pki["gateway"]
    settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES = pki["ca"]
    return settings


def _send(pacs, *, tls=True):
    return send_instances(
        destination=Destination("TOURS_PACS", "127.0.0.1", pacs.port, tls=tls),
        instances=Instance.objects.all(),
        calling_ae_title="MIRC",
    )


def test_priors_reach_a_pacs_in_tls_each_side_certified(
    world,
    archived,  # noqa: F811
    regional_tls,
    pki,  # noqa: F811
    tmp_path,
):
    pacs = _tls_pacs(tmp_path / "pacs", pki)
    try:
        result = _send(pacs)
    finally:
        pacs.stop()
    assert (result.sent, result.failed) == (5, 0)
    assert set(_received(pacs)) == set(archived)


def test_nothing_leaves_for_a_pacs_whose_certificate_the_region_does_not_trust(
    world,
    archived,  # noqa: F811
    regional_tls,
    pki,  # noqa: F811
    tmp_path,
):
    # A machine answering at the PACS's address with another authority's certificate.
    impostor = _tls_pacs(tmp_path / "impostor", pki, certificate="impostor_pacs")
    try:
        with pytest.raises(DestinationUnreachable):
            _send(impostor)
    finally:
        impostor.stop()
    assert impostor.files() == []


def test_a_pacs_that_requires_the_portals_certificate_refuses_a_portal_without_one(
    world,
    archived,  # noqa: F811
    regional_tls,
    pki,  # noqa: F811
    tmp_path,
):
    regional_tls.DICOM_GATEWAY_TLS_KEY = regional_tls.DICOM_GATEWAY_TLS_CERTIFICATE = ""
    pacs = _tls_pacs(tmp_path / "pacs", pki)
    try:
        with pytest.raises(DestinationUnreachable):
            _send(pacs)
    finally:
        pacs.stop()
    assert pacs.files() == []


def test_unreadable_regional_certificates_are_an_unreachable_destination_not_a_crash(
    world,
    archived,  # noqa: F811
    regional_tls,
    tmp_path,
):
    regional_tls.DICOM_GATEWAY_TLS_CA_CERTIFICATES = str(tmp_path / "missing-ca.pem")
    with pytest.raises(DestinationUnreachable, match="TLS not configured"):
        send_instances(
            destination=Destination("TOURS_PACS", "127.0.0.1", 1, tls=True),
            instances=Instance.objects.all(),
            calling_ae_title="MIRC",
        )


def test_a_c_move_to_a_pacs_declared_in_tls_arrives_over_tls(
    region,  # noqa: F811
    regional_tls,
    pki,  # noqa: F811
    tmp_path,
):
    pacs = _tls_pacs(tmp_path / "tls-pacs", pki)
    declaration = region.tours_declaration
    declaration.pacs_port, declaration.pacs_tls = pacs.port, True
    declaration.save()
    study = region.bourges_study
    try:
        log = _movescu(region, [f"StudyInstanceUID={study.study_instance_uid}"])
    finally:
        pacs.stop()
    assert "Success" in log, log
    received = {str(pydicom.dcmread(path).SOPInstanceUID) for path in pacs.files()}
    assert received == set(
        Instance.objects.filter(series__study=study).values_list("sop_instance_uid", flat=True)
    )
