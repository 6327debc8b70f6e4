"""The gateway at its association limit, as production sets it: 50 establishments' systems
associated at once are all served; the 51st is refused cleanly (A-ASSOCIATE-RJ, transient,
local limit exceeded) and served as soon as one of the others releases."""

import pytest
from django.conf import settings
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.test_dicom_gateway import (  # noqa: F401 - fixtures
    TOURS_AE,
    _wait_for,
    start_gateway,
)

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]


def _associate(port):
    client = AE(ae_title=TOURS_AE)
    client.add_requested_context(Verification)
    client.acse_timeout = 10
    # Held open while the other 49 associate (seconds on a busy machine): the gateway's own
    # idle limit, not a shorter one of the test's.
    client.network_timeout = 60
    return client.associate("127.0.0.1", port, ae_title="MIRC")


def test_fifty_associations_at_once_are_served_and_the_51st_is_refused_cleanly(
    world,
    start_gateway,  # noqa: F811
):
    limit = settings.DICOM_GATEWAY_MAX_ASSOCIATIONS
    assert limit == 50  # the production default the issue names
    port = start_gateway(max_associations=limit)
    held = []
    try:
        for _ in range(limit):
            association = _associate(port)
            assert association.is_established
            held.append(association)
        # Every one of them is served while all are open.
        assert all(a.send_c_echo().Status == 0x0000 for a in held)

        extra = _associate(port)
        assert not extra.is_established
        assert extra.is_rejected
        # PS3.8 9.3.4: rejected-transient (2), service-provider presentation (3), local limit
        # exceeded (2): the establishment's system knows to try again later.
        assert (extra.acceptor.primitive.result, extra.acceptor.primitive.result_source) == (
            0x02,
            0x03,
        )
        assert extra.acceptor.primitive.diagnostic == 0x02

        # One releases: the next is served.
        held.pop().release()

        def admitted():
            association = _associate(port)
            if association.is_established:
                held.append(association)
                return True
            return False

        _wait_for(admitted, "the gateway to accept again under the limit")
        assert held[-1].send_c_echo().Status == 0x0000
    finally:
        for association in held:
            if association.is_established:
                association.release()
