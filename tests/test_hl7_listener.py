"""The HL7 v2 identity feed: establishments' ADT messages (IHE PAM, French profile).

The CHRU de Tours (FINESS 370000481, IPP issuer CHRU-TOURS) and the CH de Bourges
(180000028, IPP of type PI) send A28/A04/A08 messages. Jeanne Dupont (world.patient) is
already known with a qualified INS and the Tours IPP T100001. The messages are written
after the IHE PAM France profile: PID-3 IPP and INS with its OID, PID-5 birth name (L)
and used name (D), PID-7/8, PID-11 birthplace (type BDL), PID-32 identity reliability.
"""

import socket
import threading
import time

import pytest
from django.test import override_settings

from portal.hl7 import handle_message
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    Establishment,
    IdentityConflict,
    IdentityStatus,
    InsOid,
    Patient,
    PatientIdentifier,
)

# Hélène Lefèvre, born 25/10/1962 in Bourges (18033): nobody has registered her yet.
HELENE_FIRST13 = "2621018033004"
HELENE_INS = HELENE_FIRST13 + f"{97 - int(HELENE_FIRST13) % 97:02d}"
TOURS = "CHRU TOURS^370000481^M"
BOURGES = "CH BOURGES^180000028^M"


def adt(
    *,
    event="A28",
    facility=TOURS,
    control="MSG0001",
    ipp="T200001^^^CHRU-TOURS&1.2.250.1.211.10.200.2&ISO^PI",
    ins=HELENE_INS,
    ins_oid=InsOid.NIR_TEST.value,
    names="LEFEVRE^Hélène^Hélène Anne^^^^L",
    birth_date="19621025",
    sex="F",
    birth_place="18033",
    reliability="QUAL",
    encoding="^~\\&",
    charset="UNICODE UTF-8",
    pid=True,
):
    structure = {"A28": "ADT_A05", "A05": "ADT_A05", "A31": "ADT_A05"}.get(event, "ADT_A01")
    identifiers = ipp
    if ins:
        identifiers += f"~{ins}^^^ASIP-SANTE-INS-NIR&{ins_oid}&ISO^INS"
    segments = [
        f"MSH|{encoding}|GAM|{facility}|MIRC|ARS-CVL|20261205101500||ADT^{event}^{structure}"
        f"|{control}|P|2.5^FRA^2.10|||||FRA|{charset}|||2.10",
        "EVN||20261205101500",
    ]
    if pid:
        segments.append(
            f"PID|||{identifiers}||{names}||{birth_date}|{sex}|||"
            f"^^BOURGES^^^^BDL^^{birth_place}|||||||||||||||||||||{reliability}"
        )
    segments.append("PV1||N")
    return "\r".join(segments) + "\r"


def ack_fields(ack: str) -> dict:
    segments = {line.split("|", 1)[0]: line.split("|") for line in ack.strip("\r").split("\r")}
    return segments


def counts():
    return (
        Patient.objects.count(),
        PatientIdentifier.objects.count(),
        IdentityConflict.objects.count(),
    )


# --- Service level ----------------------------------------------------------------------------


def test_a28_creates_the_patient_with_its_ipp_and_qualified_ins(world):
    result = handle_message(adt())

    ack = ack_fields(result.ack)
    assert ack["MSA"][1:3] == ["AA", "MSG0001"]
    assert ack["MSH"][8] == "ACK^A28^ACK"
    assert "ERR" not in ack
    helene = Patient.objects.get(ins_matricule=HELENE_INS)
    assert (helene.birth_name, helene.first_names, helene.sex) == ("LEFEVRE", "Hélène Anne", "F")
    assert helene.birth_date.isoformat() == "1962-10-25"
    assert helene.birth_place_code == "18033"
    assert (helene.ins_oid, helene.identity_status) == (InsOid.NIR_TEST, IdentityStatus.QUALIFIED)
    assert list(helene.identifiers.values_list("establishment__finess", "value")) == [
        ("370000481", "T200001")
    ]
    created = AuditEvent.objects.get(
        patient=helene, event_id=AuditEventId.PATIENT_RECORD, action=AuditAction.CREATE
    )
    assert "370000481" in created.actor_name


def test_a08_updates_the_used_name_and_corrects_a_provisional_identity(world):
    handle_message(adt(ins="", reliability="PROV", names="LEFEBVRE^Helene^Helene^^^^L"))
    helene = Patient.objects.get(identifiers__value="T200001")
    assert helene.identity_status == IdentityStatus.PROVISIONAL

    result = handle_message(
        adt(
            event="A08",
            control="MSG0002",
            names="LEFEVRE^Hélène^Hélène Anne^^^^L~MARTIN^Hélène^^^^^D",
            reliability="QUAL",
        )
    )

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    helene.refresh_from_db()
    assert (helene.birth_name, helene.first_names) == ("LEFEVRE", "Hélène Anne")
    assert (helene.used_name, helene.used_first_name) == ("MARTIN", "Hélène")
    assert (helene.ins_matricule, helene.identity_status) == (HELENE_INS, IdentityStatus.QUALIFIED)
    assert Patient.objects.count() == 3  # the two personas and Hélène, nobody new
    assert AuditEvent.objects.filter(
        patient=helene, event_id=AuditEventId.PATIENT_RECORD, action=AuditAction.UPDATE
    ).exists()


def _jeanne_from_bourges(**overrides):
    jeanne = Patient.objects.get(identifiers__value="T100001")
    fields = {
        "event": "A04",
        "facility": BOURGES,
        "control": "B-77",
        "ipp": "B300003^^^CH-BOURGES^PI",
        "ins": jeanne.ins_matricule,
        "names": "DUPONT^Jeanne^Jeanne Marie^^^^L",
        "birth_date": "19560312",
        "birth_place": "37261",
    }
    fields.update(overrides)
    return jeanne, adt(**fields)


def test_a04_from_a_second_establishment_with_the_same_qualified_ins_joins_the_same_patient(world):
    jeanne, message = _jeanne_from_bourges()
    before = Patient.objects.count()

    result = handle_message(message)

    assert ack_fields(result.ack)["MSA"][1:3] == ["AA", "B-77"]
    assert Patient.objects.count() == before
    assert set(jeanne.identifiers.values_list("establishment__finess", "value")) == {
        ("370000481", "T100001"),
        ("180000028", "B300003"),
    }
    linked = AuditEvent.objects.get(patient=jeanne, action=AuditAction.UPDATE)
    assert linked.detail["establishment"] == "180000028"
    assert linked.detail["changed"] == ["ipp"]


def test_differing_traits_with_the_same_ins_go_to_identity_vigilance_never_merged(world):
    jeanne, message = _jeanne_from_bourges(birth_date="19560321")
    before = Patient.objects.count()

    result = handle_message(message)

    ack = ack_fields(result.ack)
    # Accepted (the conflict is stored for review) with a warning saying why.
    assert ack["MSA"][1] == "AA"
    assert ack["ERR"][4] == "W"
    assert "identity vigilance" in ack["ERR"][8]
    conflict = IdentityConflict.objects.get(patient=jeanne)
    assert conflict.establishment == world.bourges
    assert conflict.differing_traits == ["birth_date"]
    assert Patient.objects.count() == before
    assert not PatientIdentifier.objects.filter(value="B300003").exists()
    jeanne.refresh_from_db()
    assert jeanne.birth_date.isoformat() == "1956-03-12"


def test_a08_changing_a_qualified_identity_is_a_conflict_not_an_update(world):
    jeanne = Patient.objects.get(identifiers__value="T100001")
    result = handle_message(
        adt(
            event="A08",
            ipp="T100001^^^CHRU-TOURS^PI",
            ins=jeanne.ins_matricule,
            names="DUPOND^Jeanne^Jeanne Marie^^^^L",
            birth_date="19560312",
            birth_place="37261",
        )
    )

    assert ack_fields(result.ack)["ERR"][4] == "W"
    jeanne.refresh_from_db()
    assert jeanne.birth_name == "Dupont"
    assert IdentityConflict.objects.get(patient=jeanne).differing_traits == ["birth_name"]


BAD_MESSAGES = {
    "missing PID": (adt(pid=False), "AE", "100"),
    "wrong encoding characters": (adt(encoding="^~\\#"), "AR", "102"),
    "unknown trigger event": (adt(event="A99"), "AR", "201"),
    "unknown sending facility": (adt(facility="CLINIQUE X^999999999^M"), "AR", "103"),
    "no IPP of the establishment": (adt(ipp="X1^^^OTHER-ISSUER^PI"), "AE", "101"),
    "INS with a wrong key": (adt(ins=HELENE_FIRST13 + "00"), "AE", "102"),
    "no birth date": (adt(birth_date=""), "AE", "101"),
    "qualified identity without its INS": (adt(ins=""), "AE", "101"),
    "not HL7 at all": ("GET / HTTP/1.1\r\n", "AR", "100"),
}


@pytest.mark.parametrize("case", BAD_MESSAGES)
def test_a_bad_message_gets_its_error_ack_and_writes_nothing(world, case):
    message, ack_code, error_code = BAD_MESSAGES[case]
    before = counts()
    audited = AuditEvent.objects.count()

    result = handle_message(message)

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == ack_code
    assert ack["ERR"][3].split("^")[0] == error_code
    assert ack["ERR"][4] == "E"
    assert counts() == before
    refusal = AuditEvent.objects.order_by("-id").first()
    assert AuditEvent.objects.count() == audited + 1
    assert refusal.detail["ack"] == ack_code


def test_an_establishment_may_declare_the_sending_facility_its_system_sends(world):
    world.bourges.hl7_sending_facility = "SIH-BOURGES"
    world.bourges.save()

    result = handle_message(
        adt(facility="SIH-BOURGES", ipp="B400004^^^CH-BOURGES^PI", ins="", reliability="PROV")
    )

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert PatientIdentifier.objects.get(value="B400004").establishment == world.bourges


def test_an_unknown_sender_is_audited_as_a_security_alert(world):
    handle_message(adt(facility="CLINIQUE X^999999999^M"))
    alert = AuditEvent.objects.order_by("-id").first()
    assert alert.event_id == AuditEventId.SECURITY_ALERT
    assert alert.detail["sending_facility"] == "CLINIQUE X^999999999^M"
    assert (alert.detail["ack"], alert.detail["error"]) == ("AR", "103")


# --- Over a real MLLP socket ------------------------------------------------------------------


@pytest.fixture
def listener(transactional_db):
    """The MLLP server on a free loopback port, in a thread of the test process."""
    import asyncio

    from portal.management.commands.hl7_listener import start_listener

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state = {}

    async def serve():
        state["stop"] = asyncio.Event()
        server = await start_listener("127.0.0.1", 0)
        state["port"] = server.sockets[0].getsockname()[1]
        started.set()
        await state["stop"].wait()
        server.close()
        # Open connections end too: a test leaves no server and no task behind.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await server.wait_closed()

    with override_settings(HL7_READ_TIMEOUT_SECONDS=0.5, HL7_MAX_MESSAGE_BYTES=4096):
        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        assert started.wait(10), "the listener did not start"
        yield state["port"]
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)
        assert not thread.is_alive()
        loop.close()


def _exchange(port: int, payload: bytes, *, deadline: float = 10.0) -> bytes:
    """Send bytes and read until the connection gives a whole MLLP frame or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        sock.sendall(payload)
        received = b""
        end = time.monotonic() + deadline
        while not received.endswith(b"\x1c\r") and time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def frame(message: str) -> bytes:
    return b"\x0b" + message.encode() + b"\x1c\r"


def test_mllp_listener_acks_survives_a_truncated_frame_and_keeps_serving(listener):
    Establishment.objects.create(
        name="CHRU de Tours",
        finess="370000481",
        city="Tours",
        kind="chu",
        patient_id_issuer="CHRU-TOURS",
    )

    # A frame without its end block: the listener drops the connection after its timeout.
    truncated = _exchange(listener, b"\x0b" + adt(control="CUT").encode()[:120])
    assert truncated == b""
    assert Patient.objects.count() == 0

    # An oversize message: refused with an AR, nothing written.
    oversize = _exchange(listener, frame(adt(control="BIG") + "NTE|" + "x" * 5000 + "\r"))
    assert b"MSA|AR" in oversize
    assert Patient.objects.count() == 0

    # Messages on one connection: each gets its ACK, in order; MSH-18 names the charset.
    used_name_latin1 = adt(
        event="A08",
        control="LAT3",
        names="LEFEVRE^Hélène^Hélène Anne^^^^L~BÉRANGER^Hélène^^^^^D",
        charset="8859/1",
    ).encode("latin-1")
    with socket.create_connection(("127.0.0.1", listener), timeout=10) as sock:
        acks = []
        for payload in (
            frame(adt(control="OK1")),
            frame(adt(event="A99", control="BAD2")),
            b"\x0b" + used_name_latin1 + b"\x1c\r",
        ):
            sock.sendall(payload)
            received = b""
            end = time.monotonic() + 10
            while not received.endswith(b"\x1c\r") and time.monotonic() < end:
                chunk = sock.recv(65536)
                if not chunk:  # the listener hung up: no ACK is coming, fail on what came
                    break
                received += chunk
            acks.append(received)
    assert acks[0].startswith(b"\x0bMSH|^~\\&|MIRC|ARS-CVL|GAM|CHRU TOURS^370000481^M|")
    assert b"MSA|AA|OK1" in acks[0]
    assert b"MSA|AR|BAD2" in acks[1]
    assert b"MSA|AA|LAT3" in acks[2]
    helene = Patient.objects.get(ins_matricule=HELENE_INS)
    assert helene.identifiers.get().value == "T200001"
    assert helene.used_name == "BÉRANGER"
