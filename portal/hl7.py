"""The HL7 v2 identity feed: ADT messages of IHE PAM (French profile) applied to the patients.

An establishment's patient administration system sends A28 (new person), A01/A04/A05
(admission, registration, pre-admission) and A08/A31 (update) messages over MLLP
(``manage.py hl7_listener``). :func:`handle_message` is the whole application side, with
no socket: it reads the message, finds the sending establishment (MSH-4 carries its
FINESS), applies the identity with the portal's INS rules (:func:`portal.services.
patient_register`: same identity, same patient; different traits, an identity conflict
for the vigilance team, never a merge) and returns the ACK to send back.

ACK choices (HL7 v2.5 chapter 2, table 0008, and IHE PAM France):

- AA: the identity was applied. When it ran into an identity conflict, the message is
  still *accepted* (AA) with an ERR segment of severity W: the conflict is stored for the
  identity-vigilance team, which is the answer the profile expects; an AE would make the
  sender's interface engine resend or hold its queue for a problem only a person can solve.
- AE: the message is understood but its content is wrong (no PID, no IPP of the
  establishment, a missing or malformed trait, a wrong INS key).
- AR: the message is refused as a whole (unreadable, wrong encoding characters, unknown
  sending facility, unsupported message type or trigger event).

Nothing is written for an AE or AR message except its audit event; every write of an
accepted message happens in one transaction with its audit events.

Admissions (A01, A04, A05) that are accepted without an identity conflict announce
``portal.events.patient_admitted`` once committed (imaging sends the priors).

Identifier maintenance of IHE PAM (ITI TF-2b 3.30.4, ITI-30), in the sending establishment's
own identifier domain (PID-3 and MRG-1 both carry its IPPs):

- A47 (change patient identifier list, ADT_A30): MRG-1 is the incorrect IPP, PID-3 the
  correct one; the local identifier changes value, the regional patient stays the same.
  An unknown MRG-1 is an AE (204, unknown key); a PID-3 already used by another patient of
  the establishment is an AE (205, duplicate key): joining two records is what A40 says,
  never an A47, so the feed does not merge on a message that did not ask for it.
- A40 (merge patient identifier list, ADT_A39): MRG-1 is the IPP that disappears, PID-3
  the surviving one. Both on one regional patient: the merged IPP is dropped. On two
  regional patients: they are merged (portal.services.patient_merge: studies, care team,
  identifiers, conflicts, and every higher app's rows through its AppConfig
  ``merge_patient``) only when the five traits agree and they do not carry two different
  INS. Traits (or INS not both qualified) disagree: nothing merged, an IdentityConflict for
  identity vigilance, AA with an ERR of severity W (as for the other conflicts). Two
  different *qualified* INS: two persons by the national referential; the message is
  refused (AE), audited, nothing written. An MRG-1 IPP that is unknown while PID-3 is known
  is an A40 already applied (a resend): AA, nothing to do.

The patient's opposition to sharing between establishments (Code de la santé publique,
L1110-4) travels in PD1-12 (Protection Indicator, HL7 table 0136): "Y" the patient opposes,
"N" the opposition is lifted, absent or empty leaves it unchanged; anything else is an AE.
The French extension of PAM does not name one field for this refusal as far as we could
check (its ZFD segment carries other French complements, and PD1-12 is the international
"protect this patient's information" flag); PD1-12 is the carrier we chose and document to
the establishments, pending the regional interface agreement. It is applied (audited, source
"hl7" and the establishment) to the patient an accepted message designates, and not when
the message ran into an identity conflict: which patient opposes is then for vigilance.

The patient's declared GP ("médecin traitant", portal.gp) travels in the ROL segment of a
primary care provider (ROL-3 "PP" or "FHCP", HL7 table 0443; ROL-4 the GP as an XCN, ROL-5 the
date he was chosen, ROL-2 the action: AD, UP or UC declare him, DE ends the declaration), else
in PD1-4 (Patient Primary Care Provider, XCN, declared from the day of the message). The XCN's
identifier is an RPPS when its identifier type (XCN-13) is "RPPS", or when its assigning
authority (XCN-9) is the national identifier of health professionals (OID
1.2.250.1.71.4.2.1, "ASIP-SANTE-PS") and it reads "8" + the 11-digit RPPS. A GP the portal
knows (a professional, or a person of the national directory, who then gets an account) is
declared with source "hl7" and the sending establishment. A GP it cannot resolve (an
unknown or malformed RPPS, an ADELI number, a name without identifier) does not hold the
identity back: the message is accepted (AA) with an ERR of severity W, and the GP as sent is
kept in the audit event. So is a declaration the portal refuses (a date before the current
GP's, in the future, or a professional who treats no patient). Not for a message that ran
into an identity conflict, as for the opposition.
"""

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field

import hl7
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal import audit, events, gp
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory, active_person
from portal.identifiers import luhn_is_valid
from portal.models import (
    Establishment,
    GpDeclarationSource,
    IdentityConflict,
    IdentityConflictSource,
    IdentityStatus,
    InsOid,
    Patient,
    PatientIdentifier,
    Professional,
    Sex,
)
from portal.services import (
    IdentityConflictError,
    PatientMergeRefused,
    PatientTraits,
    SharingOppositionUnchanged,
    _name_search,
    differing_traits,
    identity_conflict_record,
    patient_merge,
    patient_register,
    sharing_opposition_lift,
    sharing_opposition_record,
)

logger = logging.getLogger(__name__)

ENCODING_CHARACTERS = "^~\\&"
CREATING_EVENTS = frozenset({"A01", "A04", "A05", "A28"})
UPDATING_EVENTS = frozenset({"A08", "A31"})
MERGE_EVENT = "A40"
IDENTIFIER_CHANGE_EVENT = "A47"
# The patient comes (or will come) to the establishment: portal.events.patient_admitted.
ADMITTING_EVENTS = frozenset({"A01", "A04", "A05"})
SUPPORTED_EVENTS = CREATING_EVENTS | UPDATING_EVENTS | {MERGE_EVENT, IDENTIFIER_CHANGE_EVENT}
# PD1-12 Protection Indicator (HL7 table 0136): the opposition to sharing, see above.
PROTECTION_INDICATOR = {"Y": True, "N": False}
# The declared GP, see above: ROL-3 roles of HL7 table 0443, ROL-2 actions of table 0287.
GP_ROLES = frozenset({"PP", "FHCP"})
GP_DECLARING_ACTIONS = frozenset({"AD", "UP", "UC", ""})
GP_WITHDRAWING_ACTION = "DE"
# The national identifier of health professionals (ANS): "8" + RPPS, "0" + ADELI.
PS_IDENTIFIER_AUTHORITIES = frozenset({"1.2.250.1.71.4.2.1", "ASIP-SANTE-PS"})

# PID-32 identity reliability codes of the French profile (table 0445 extended).
RELIABILITY_STATUS = {
    "PROV": IdentityStatus.PROVISIONAL,
    "VIDE": IdentityStatus.PROVISIONAL,
    "DOUTE": IdentityStatus.PROVISIONAL,
    "FICTI": IdentityStatus.PROVISIONAL,
    "RECUP": IdentityStatus.RETRIEVED,
    "VALI": IdentityStatus.VALIDATED,
    "QUAL": IdentityStatus.QUALIFIED,
}
STATUS_RANK = {
    IdentityStatus.PROVISIONAL: 0,
    IdentityStatus.RETRIEVED: 1,
    IdentityStatus.VALIDATED: 2,
    IdentityStatus.QUALIFIED: 3,
}
INS_OIDS = frozenset(InsOid.values)
HL7_SEX = {"F": Sex.FEMALE, "M": Sex.MALE, "U": Sex.UNDETERMINED, "O": Sex.UNDETERMINED}

# HL7 table 0357 (message error condition codes).
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_INTERNAL_ERROR = "207"
ERROR_NAMES = {
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class MessageRefused(Exception):
    """The message cannot be applied: answered with ``ack_code`` and an ERR segment."""

    def __init__(self, ack_code: str, error_code: str, text: str, location: str = ""):
        super().__init__(text)
        self.ack_code = ack_code
        self.error_code = error_code
        self.text = text
        self.location = location


@dataclass
class Header:
    """What an ACK needs from MSH, read even from a message refused afterwards."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = "MIRC"
    receiving_facility: str = "MIRC"
    control_id: str = ""
    trigger_event: str = ""
    version: str = "2.5"


@dataclass
class DeclaredGp:
    """The GP a message declares (or withdraws): PD1-4 or a primary care provider's ROL."""

    withdraw: bool
    rpps: str  # "" when the identifier is not a valid RPPS
    sent: dict  # the XCN as sent (identifier, authority, type, name): the audit's record
    started_on: dt.date | None  # ROL-5; None: the day the message is applied
    location: str  # where it was read, for the ACK's ERR


@dataclass
class Identity:
    ipp: str
    traits: PatientTraits
    used_name: str = ""
    used_first_name: str = ""
    ins_matricule: str = ""
    ins_oid: str = ""
    identity_status: str = IdentityStatus.PROVISIONAL
    # PD1-12: True opposes sharing, False lifts the opposition, None leaves it as it is.
    sharing_opposed: bool | None = None
    # PD1-4 or ROL: the declared GP; None leaves him as he is.
    gp: DeclaredGp | None = None


@dataclass
class Result:
    """The ACK to send back and what the message did (for tests, logs and the listener)."""

    ack: str
    ack_code: str
    error: str = ""
    patient: Patient | None = None
    created: bool = False
    conflict: IdentityConflict | None = None
    changed: list[str] = field(default_factory=list)
    # Accepted with a warning (an ERR of severity W): the declared GP was not applied.
    warning: str = ""
    warning_code: str = ""
    warning_location: str = ""


# --- Reading ----------------------------------------------------------------------------------


def _split(value: str, separator: str) -> list[str]:
    return value.split(separator) if value else []


def _part(parts: list[str], number: int) -> str:
    """The ``number``-th (1-based) element of a split field, or "" when absent."""
    return parts[number - 1] if len(parts) >= number else ""


def _field(segment, number: int) -> str:
    """Field ``number`` of a segment as raw text ("" when absent); MSH counts MSH-1 as "|"."""
    try:
        return str(segment[number])
    except IndexError:
        return ""


def _read_header(text: str) -> Header:
    """MSH read field by field from the text, so a refused message still gets a proper ACK."""
    header = Header()
    first = text.split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return header
    fields = first[3:].split(first[3])
    # fields[0] is "" (before MSH-1's separator), fields[1] is MSH-2, fields[n-1] is MSH-n.
    components = first[4] if len(first) > 4 else "^"
    header.sending_application = _part(fields, 3)
    header.sending_facility = _part(fields, 4)
    header.receiving_application = _part(fields, 5) or header.receiving_application
    header.receiving_facility = _part(fields, 6) or header.receiving_facility
    header.trigger_event = _part(_split(_part(fields, 9), components), 2)
    header.control_id = _part(fields, 10)
    header.version = _part(fields, 12) or header.version
    return header


def _parse(text: str):
    if not text.startswith("MSH"):
        raise MessageRefused("AR", SEGMENT_SEQUENCE_ERROR, "The message does not begin with MSH.")
    if text[3:8] != "|" + ENCODING_CHARACTERS:
        # The French profile fixes the delimiters; other ones would make every field wrong.
        raise MessageRefused(
            "AR",
            DATA_TYPE_ERROR,
            "MSH-1/MSH-2 must be the standard delimiters |^~\\&.",
            "MSH^1^2",
        )
    try:
        return hl7.parse(text)
    except Exception as error:  # the library raises several types on malformed text
        raise MessageRefused("AR", DATA_TYPE_ERROR, f"Unreadable message: {error}") from error


def _establishment(header: Header) -> Establishment:
    """MSH-4 (HD): its declared sending-facility code, else its FINESS (HD-1 or HD-2)."""
    candidates = [c for c in header.sending_facility.split("^")[:2] if c]
    declared = [header.sending_facility, *candidates] if header.sending_facility else []
    establishment = (
        Establishment.objects.filter(hl7_sending_facility__in=declared).first()
        or Establishment.objects.filter(finess__in=candidates).first()
    )
    if establishment is None:
        raise MessageRefused(
            "AR",
            TABLE_VALUE_NOT_FOUND,
            f"Unknown sending facility {header.sending_facility!r}: MSH-4 must carry the FINESS"
            " or the declared HL7 sending facility of an establishment of the region.",
            "MSH^1^4",
        )
    return establishment


def _check_message_type(message, header: Header) -> None:
    message_type = _split(_field(message.segment("MSH"), 9), "^")
    if _part(message_type, 1) != "ADT":
        raise MessageRefused(
            "AR", UNSUPPORTED_MESSAGE_TYPE, "Only ADT messages are accepted.", "MSH^1^9^1"
        )
    if header.trigger_event not in SUPPORTED_EVENTS:
        raise MessageRefused(
            "AR",
            UNSUPPORTED_EVENT_CODE,
            f"Unsupported trigger event {header.trigger_event!r}: accepted are "
            + ", ".join(sorted(SUPPORTED_EVENTS))
            + ".",
            "MSH^1^9^2",
        )


def _is_local_ipp(establishment: Establishment, namespace: str, universal_id: str, type_code: str):
    if establishment.patient_id_issuer:
        return establishment.patient_id_issuer in {namespace, universal_id}
    return type_code in {"PI", ""}


def _identifiers(pid, establishment: Establishment, unescape) -> tuple[str, str, str]:
    """PID-3 (CX repetitions): the establishment's IPP, and the INS with its OID if present."""
    ipp = ins = ins_oid = ""
    for repetition in _split(_field(pid, 3), "~"):
        cx = repetition.split("^")
        value = unescape(_part(cx, 1)).strip()
        authority = _part(cx, 4).split("&")
        namespace, universal_id = _part(authority, 1), _part(authority, 2)
        type_code = _part(cx, 5)
        if universal_id in INS_OIDS or type_code in {"INS", "INS-NIR", "INS-NIA"}:
            ins, ins_oid = value, universal_id
        elif not ipp and _is_local_ipp(establishment, namespace, universal_id, type_code):
            ipp = value
    if not ipp:
        raise MessageRefused(
            "AE",
            REQUIRED_FIELD_MISSING,
            "PID-3 carries no IPP of the sending establishment"
            + (
                f" (assigning authority {establishment.patient_id_issuer})."
                if establishment.patient_id_issuer
                else " (identifier type PI)."
            ),
            "PID^1^3",
        )
    if ins and ins_oid not in INS_OIDS:
        raise MessageRefused(
            "AE", TABLE_VALUE_NOT_FOUND, f"Unknown INS OID {ins_oid!r}.", "PID^1^3^4"
        )
    return ipp, ins.upper(), ins_oid


def _names(pid, unescape) -> tuple[str, str, str, str]:
    """PID-5 (XPN repetitions): L is the birth name, D the used name (French profile)."""
    birth_name = first_names = used_name = used_first_name = ""
    for repetition in _split(_field(pid, 5), "~"):
        xpn = [unescape(part).strip() for part in repetition.split("^")]
        name_type = _part(xpn, 7) or "L"
        if name_type == "L" and not birth_name:
            birth_name = _part(xpn, 1)
            # XPN-3 holds all the birth first names, XPN-2 the first one.
            first_names = _part(xpn, 3) or _part(xpn, 2)
        elif name_type == "D" and not used_name:
            used_name = _part(xpn, 1)
            used_first_name = _part(xpn, 2)
    return birth_name, first_names, used_name, used_first_name


def _birth_place_code(pid) -> str:
    """PID-11 with address type BDL (its county code, XAD-9), else PID-23."""
    for repetition in _split(_field(pid, 11), "~"):
        xad = repetition.split("^")
        if _part(xad, 7) == "BDL" and _part(xad, 9):
            return _part(xad, 9)
    return _part(_field(pid, 23).split("^"), 1)


def _protection_indicator(message) -> bool | None:
    """PD1-12 (table 0136): the patient's opposition to sharing (see the module docstring)."""
    try:
        pd1 = message.segment("PD1")
    except KeyError:
        return None
    value = _field(pd1, 12).strip()
    if not value:
        return None
    if value not in PROTECTION_INDICATOR:
        raise MessageRefused(
            "AE",
            TABLE_VALUE_NOT_FOUND,
            f"PD1-12 must be Y (opposes sharing) or N (lifts the opposition), not {value!r}.",
            "PD1^1^12",
        )
    return PROTECTION_INDICATOR[value]


def _rpps_of(identifier: str, namespace: str, universal_id: str, type_code: str) -> str:
    """The RPPS an XCN's identifier carries, or "" (see the module docstring)."""
    digits = identifier.strip()
    if type_code.upper() == "RPPS" or namespace.upper() == "RPPS":
        if len(digits) == 12 and digits.startswith("8"):
            digits = digits[1:]
    elif universal_id in PS_IDENTIFIER_AUTHORITIES or namespace in PS_IDENTIFIER_AUTHORITIES:
        # The national identifier: "8" + RPPS; "0" + ADELI is no RPPS.
        if not (len(digits) == 12 and digits.startswith("8")):
            return ""
        digits = digits[1:]
    else:
        return ""
    if len(digits) != 11 or not digits.isdigit() or not luhn_is_valid(digits):
        return ""
    return digits


def _xcn(value: str, unescape) -> tuple[str, dict]:
    """The RPPS of an XCN (first repetition) and the XCN as sent, for the audit."""
    xcn = [unescape(part).strip() for part in _split(value, "~")[0].split("^")] if value else []
    authority = _part(xcn, 9).split("&")
    sent = {
        "identifier": _part(xcn, 1),
        "family_name": _part(xcn, 2).split("&")[0],
        "given_name": _part(xcn, 3),
        "authority": "&".join(a for a in authority if a),
        "identifier_type": _part(xcn, 13),
    }
    rpps = _rpps_of(sent["identifier"], _part(authority, 1), _part(authority, 2), _part(xcn, 13))
    return rpps, {key: value for key, value in sent.items() if value}


def _hl7_date(value: str, location: str) -> dt.date | None:
    raw = value.split("^")[0].strip()[:8]
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(f"{raw[:4]}-{raw[4:6]}-{raw[6:8]}")
    except ValueError:
        raise MessageRefused(
            "AE", DATA_TYPE_ERROR, f"Not a date (YYYYMMDD): {raw!r}.", location
        ) from None


def _declared_gp(message) -> DeclaredGp | None:
    """The primary care provider's ROL, else PD1-4 (see the module docstring)."""
    unescape = message.unescape
    try:
        roles = message.segments("ROL")
    except KeyError:
        roles = []
    for number, rol in enumerate(roles, start=1):
        role = _part(_field(rol, 3).split("^"), 1).strip().upper()
        if role not in GP_ROLES:
            continue
        action = _part(_field(rol, 2).split("^"), 1).strip().upper()
        if action != GP_WITHDRAWING_ACTION and action not in GP_DECLARING_ACTIONS:
            raise MessageRefused(
                "AE",
                TABLE_VALUE_NOT_FOUND,
                f"ROL-2 must be AD, UP, UC or DE, not {action!r}.",
                f"ROL^{number}^2",
            )
        rpps, sent = _xcn(_field(rol, 4), unescape)
        withdraw = action == GP_WITHDRAWING_ACTION
        if not sent and not withdraw:
            raise MessageRefused(
                "AE",
                REQUIRED_FIELD_MISSING,
                "ROL-4 must name the primary care provider.",
                f"ROL^{number}^4",
            )
        return DeclaredGp(
            withdraw=withdraw,
            rpps=rpps,
            sent=sent,
            started_on=_hl7_date(_field(rol, 5), f"ROL^{number}^5"),
            location=f"ROL^{number}^4",
        )
    try:
        pd1 = message.segment("PD1")
    except KeyError:
        return None
    rpps, sent = _xcn(_field(pd1, 4), unescape)
    if not sent:
        return None
    return DeclaredGp(withdraw=False, rpps=rpps, sent=sent, started_on=None, location="PD1^1^4")


def _local_identifiers(message, establishment: Establishment) -> tuple[str, str]:
    """A40/A47: the establishment's IPP in PID-3 (the correct or surviving one) and in MRG-1
    (the incorrect or merged one), ITI TF-2b 3.30.4."""
    try:
        pid = message.segment("PID")
        mrg = message.segment("MRG")
    except KeyError:
        raise MessageRefused(
            "AE",
            SEGMENT_SEQUENCE_ERROR,
            f"ADT^{MERGE_EVENT} and ADT^{IDENTIFIER_CHANGE_EVENT} need a PID and an MRG segment.",
            "MRG",
        ) from None
    unescape = message.unescape
    ipp, _ins, _oid = _identifiers(pid, establishment, unescape)
    merged = ""
    for repetition in _split(_field(mrg, 1), "~"):
        cx = repetition.split("^")
        authority = _part(cx, 4).split("&")
        if _is_local_ipp(establishment, _part(authority, 1), _part(authority, 2), _part(cx, 5)):
            merged = unescape(_part(cx, 1)).strip()
            break
    if not merged:
        raise MessageRefused(
            "AE",
            REQUIRED_FIELD_MISSING,
            "MRG-1 carries no IPP of the sending establishment.",
            "MRG^1^1",
        )
    if merged == ipp:
        raise MessageRefused(
            "AE", DATA_TYPE_ERROR, "MRG-1 and PID-3 carry the same IPP.", "MRG^1^1"
        )
    return ipp, merged


def read_identity(message, establishment: Establishment) -> Identity:
    try:
        pid = message.segment("PID")
    except KeyError:
        raise MessageRefused(
            "AE", SEGMENT_SEQUENCE_ERROR, "The message has no PID segment.", "PID"
        ) from None
    unescape = message.unescape
    ipp, ins, ins_oid = _identifiers(pid, establishment, unescape)
    birth_name, first_names, used_name, used_first_name = _names(pid, unescape)
    required = (("PID-5 birth name (type L)", birth_name), ("first names", first_names))
    missing = [label for label, value in required if not value]
    raw_date = _field(pid, 7)[:8]
    try:
        birth_date = dt.date.fromisoformat(f"{raw_date[:4]}-{raw_date[4:6]}-{raw_date[6:8]}")
    except ValueError:
        birth_date = None
        missing.append("PID-7 birth date (YYYYMMDD)")
    sex = HL7_SEX.get(_field(pid, 8))
    if sex is None:
        missing.append("PID-8 sex (F, M or U)")
    birth_place_code = _birth_place_code(pid)
    if not (len(birth_place_code) == 5 and birth_place_code[:2].isalnum()):
        missing.append("birth place code (PID-11 type BDL, or PID-23)")
    if missing:
        raise MessageRefused(
            "AE", REQUIRED_FIELD_MISSING, "Missing or invalid: " + ", ".join(missing) + ".", "PID"
        )
    reliability = _field(pid, 32)
    status = RELIABILITY_STATUS.get(reliability, IdentityStatus.PROVISIONAL)
    if status == IdentityStatus.QUALIFIED and not ins:
        raise MessageRefused(
            "AE", REQUIRED_FIELD_MISSING, "A qualified identity (QUAL) needs its INS.", "PID^1^3"
        )
    return Identity(
        ipp=ipp,
        traits=PatientTraits(
            birth_name=birth_name,
            first_names=first_names,
            sex=sex,
            birth_date=birth_date,
            birth_place_code=birth_place_code.upper(),
        ),
        used_name=used_name,
        used_first_name=used_first_name,
        ins_matricule=ins,
        ins_oid=ins_oid,
        identity_status=status,
        sharing_opposed=_protection_indicator(message),
        gp=_declared_gp(message),
    )


# --- Applying ---------------------------------------------------------------------------------


def _feed_actor(establishment: Establishment) -> Actor:
    # The establishment is the participant of every event: the feed acts for it.
    return Actor.system(name=f"HL7 {establishment.finess} {establishment.name}"[:200])


def _audit_detail(establishment: Establishment, header: Header, **extra) -> dict:
    return {
        "source": "hl7",
        "establishment": establishment.finess,
        "message": header.control_id,
        "event": header.trigger_event,
        **extra,
    }


def _record_conflict(
    *, patient, incoming_traits, establishment, header, differing, matched_on, actor, reason
):
    """An identity conflict for the vigilance team, with its security-alert audit."""
    return identity_conflict_record(
        patient=patient,
        source=IdentityConflictSource.IMPORT,
        establishment=establishment,
        matched_on=matched_on,
        incoming_traits=incoming_traits,
        differing=differing,
        by=actor,
        reason=reason,
        context=_audit_detail(establishment, header),
    )


def _update_patient(*, patient: Patient, identity: Identity, correct_traits: bool) -> list[str]:
    """Apply what the feed may change on a patient it designates; returns the changed fields."""
    wanted = {}
    if correct_traits:
        wanted.update(
            birth_name=identity.traits.birth_name,
            first_names=identity.traits.first_names,
            sex=identity.traits.sex,
            birth_date=identity.traits.birth_date,
            birth_place_code=identity.traits.birth_place_code,
        )
    if identity.used_name:
        wanted["used_name"] = identity.used_name
    if identity.used_first_name:
        wanted["used_first_name"] = identity.used_first_name
    if identity.ins_matricule and not patient.ins_matricule:
        wanted.update(ins_matricule=identity.ins_matricule, ins_oid=identity.ins_oid)
    # The regional identity only rises: one establishment's lower status (its own record
    # not yet checked) does not undo what another establishment verified.
    if STATUS_RANK[identity.identity_status] > STATUS_RANK[patient.identity_status]:
        wanted["identity_status"] = identity.identity_status
    changed = [name for name, value in wanted.items() if getattr(patient, name) != value]
    if not changed:
        return []
    for name in changed:
        setattr(patient, name, wanted[name])
    patient.name_search = _name_search(
        birth_name=patient.birth_name,
        used_name=patient.used_name,
        first_names=patient.first_names,
        used_first_name=patient.used_first_name,
    )
    patient.updated_at = timezone.now()
    patient.full_clean()
    patient.save()
    return changed


def _apply_update(*, identity, establishment, header, actor) -> Result | None:
    """A08/A31 on a known IPP; None when the IPP is unknown (then registered like an A28)."""
    local = (
        PatientIdentifier.objects.filter(establishment=establishment, value=identity.ipp)
        .select_related("patient")
        .first()
    )
    if local is None:
        return None
    patient = Patient.objects.select_for_update().get(pk=local.patient_id)
    differing = differing_traits(PatientTraits.of(patient), identity.traits)
    if identity.ins_matricule:
        if patient.ins_matricule and (patient.ins_matricule, patient.ins_oid) != (
            identity.ins_matricule,
            identity.ins_oid,
        ):
            differing.append("ins")
        elif (
            Patient.objects.filter(ins_matricule=identity.ins_matricule, ins_oid=identity.ins_oid)
            .exclude(pk=patient.pk)
            .exists()
        ):
            differing.append("identifiers")
    # The establishment may correct the traits of a provisional identity that only it
    # knows; once qualified, or shared with another establishment, a change is a question
    # for identity vigilance.
    only_here = not patient.identifiers.exclude(establishment=establishment).exists()
    correctable = (
        differing
        and "ins" not in differing
        and "identifiers" not in differing
        and patient.identity_status != IdentityStatus.QUALIFIED
        and only_here
    )
    if differing and not correctable:
        conflict = _record_conflict(
            patient=patient,
            incoming_traits={
                **identity.traits.normalized(),
                "ipp": identity.ipp,
                "ins": identity.ins_matricule,
            },
            establishment=establishment,
            header=header,
            differing=differing,
            matched_on="ipp",
            actor=actor,
            reason="identity conflict",
        )
        return Result(ack="", ack_code="AA", patient=patient, conflict=conflict)
    changed = _update_patient(patient=patient, identity=identity, correct_traits=bool(correctable))
    if changed:
        audit.record(
            actor=actor,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=patient,
            detail=_audit_detail(establishment, header, changed=changed),
        )
    return Result(ack="", ack_code="AA", patient=patient, changed=changed)


def _apply_registration(*, identity, establishment, header, actor) -> Result:
    known_ipp = PatientIdentifier.objects.filter(
        establishment=establishment, value=identity.ipp
    ).exists()
    try:
        registration = patient_register(
            traits=identity.traits,
            by=actor,
            source=IdentityConflictSource.IMPORT,
            establishment=establishment,
            ipp=identity.ipp,
            ins_matricule=identity.ins_matricule,
            ins_oid=identity.ins_oid,
            identity_status=identity.identity_status,
            used_name=identity.used_name,
            used_first_name=identity.used_first_name,
        )
    except IdentityConflictError as error:
        conflict = error.conflict
        return Result(ack="", ack_code="AA", patient=conflict.patient, conflict=conflict)
    patient = registration.patient
    changed = []
    if not registration.created:
        changed = _update_patient(patient=patient, identity=identity, correct_traits=False)
        if not known_ipp:
            changed.append("ipp")
        if changed:
            audit.record(
                actor=actor,
                event=audit.AuditEventId.PATIENT_RECORD,
                action=audit.AuditAction.UPDATE,
                obj=patient,
                detail=_audit_detail(establishment, header, changed=changed),
            )
    return Result(
        ack="", ack_code="AA", patient=patient, created=registration.created, changed=changed
    )


def _apply_sharing_opposition(*, patient: Patient, identity: Identity, establishment, actor):
    if identity.sharing_opposed is None or patient.sharing_opposed == identity.sharing_opposed:
        return
    change = sharing_opposition_record if identity.sharing_opposed else sharing_opposition_lift
    # Changed meanwhile by someone else: the state asked for is there.
    with contextlib.suppress(SharingOppositionUnchanged):
        change(patient=patient, by=actor, source="hl7", establishment=establishment)


def _gp_professional(rpps: str) -> Professional | None:
    """The portal's professional with this RPPS, else the directory's active person, linked
    (an account made for him); None when neither knows him."""
    professional = Professional.objects.select_related("user").filter(rpps=rpps).first()
    if professional is not None:
        return professional
    try:
        return active_person(rpps)
    except NotInDirectory:
        return None


def _gp_not_applied(
    *, patient, declared: DeclaredGp, establishment, header, actor, reason, code, result: Result
):
    """The declared (or withdrawn) GP could not be applied: the message stays accepted with a
    warning, the GP as sent and why are kept in an audit event on the patient (for the
    establishment's interface team)."""
    verb = "Withdrawn" if declared.withdraw else "Declared"
    result.warning = f"{verb} GP not applied ({reason}): {declared.sent}."
    result.warning_code = code
    result.warning_location = declared.location
    audit.record(
        actor=actor,
        event=audit.AuditEventId.IMPORT,
        action=audit.AuditAction.UPDATE,
        outcome=audit.AuditOutcome.MINOR_FAILURE,
        obj=patient,
        purpose=audit.AuditPurpose.CARE,
        detail=_audit_detail(
            establishment,
            header,
            gp_unresolved=declared.sent,
            gp_withdraw=declared.withdraw,
            reason=reason,
        ),
    )


def _apply_declared_gp(
    *, patient: Patient, identity: Identity, establishment, header, actor, result: Result
):
    declared = identity.gp
    if declared is None:
        return
    professional = _gp_professional(declared.rpps) if declared.rpps else None
    detail = _audit_detail(establishment, header)
    common = {"by": actor, "patient": patient, "source": GpDeclarationSource.HL7}
    reason, code = "", ""
    if professional is None and (declared.sent or not declared.withdraw):
        # A GP neither the portal nor the directory knows, declared or withdrawn (he cannot be
        # the current GP: nothing changes): the interface team hears of the RPPS sent.
        reason = "unknown GP" if declared.rpps else "no RPPS"
        code = UNKNOWN_KEY_IDENTIFIER
    elif declared.withdraw:
        # Nobody named ends the current declaration; a directory person without an account
        # is nobody's GP yet, so there is nothing to end.
        if isinstance(professional, Professional | None):
            gp.gp_withdraw(
                **common, establishment=establishment, professional=professional, detail=detail
            )
    else:
        try:
            gp.gp_declare(
                **common,
                professional=professional,
                started_on=declared.started_on,
                establishment=establishment,
                detail=detail,
            )
        except gp.GpAlreadyDeclared:
            return
        except ValidationError as error:
            reason = " ".join(error.messages)
            code = APPLICATION_INTERNAL_ERROR
    if reason:
        _gp_not_applied(
            patient=patient,
            declared=declared,
            establishment=establishment,
            header=header,
            actor=actor,
            reason=reason,
            code=code,
            result=result,
        )


def _identifier(establishment: Establishment, ipp: str) -> PatientIdentifier | None:
    return (
        PatientIdentifier.objects.select_for_update()
        .filter(establishment=establishment, value=ipp)
        .select_related("patient")
        .first()
    )


def _apply_identifier_change(*, message, establishment, header, actor) -> Result:
    """A47: MRG-1 (incorrect IPP) becomes PID-3 (correct IPP) for the same patient."""
    correct, incorrect = _local_identifiers(message, establishment)
    local = _identifier(establishment, incorrect)
    if local is None:
        raise MessageRefused(
            "AE",
            UNKNOWN_KEY_IDENTIFIER,
            f"MRG-1 IPP {incorrect!r} is unknown for this establishment.",
            "MRG^1^1",
        )
    taken = _identifier(establishment, correct)
    if taken is not None and taken.patient_id == local.patient_id:
        # The patient already carries the correct IPP: the incorrect one just goes.
        local.delete()
        audit.record(
            actor=actor,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=taken.patient,
            detail=_audit_detail(establishment, header, changed=["ipp"], removed_ipp=incorrect),
        )
        return Result(ack="", ack_code="AA", patient=taken.patient, changed=["ipp"])
    if taken is not None:
        raise MessageRefused(
            "AE",
            DUPLICATE_KEY_IDENTIFIER,
            f"PID-3 IPP {correct!r} is already another record's: an A40 merges two records,"
            " an A47 does not.",
            "PID^1^3",
        )
    local.value = correct
    local.save(update_fields=["value"])
    audit.record(
        actor=actor,
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.UPDATE,
        obj=local.patient,
        detail=_audit_detail(
            establishment, header, changed=["ipp"], previous_ipp=incorrect, ipp=correct
        ),
    )
    return Result(ack="", ack_code="AA", patient=local.patient, changed=["ipp"])


def _merge_conflict(*, source, target, establishment, header, actor, differing):
    """The two records disagree: kept apart, the survivor's conflict says with what."""
    return _record_conflict(
        patient=target,
        incoming_traits={
            **PatientTraits.of(source).normalized(),
            "ipp": ", ".join(source.identifiers.values_list("value", flat=True)),
            "ins": source.ins_matricule,
            "merged_patient": source.pk,
        },
        establishment=establishment,
        header=header,
        differing=differing,
        matched_on="merge",
        actor=actor,
        reason="merge refused: identity conflict",
    )


def _apply_merge(*, message, establishment, header, actor) -> Result:
    """A40: MRG-1 (the IPP that disappears) merges into PID-3 (the surviving IPP)."""
    surviving_ipp, merged_ipp = _local_identifiers(message, establishment)
    surviving = _identifier(establishment, surviving_ipp)
    merged = _identifier(establishment, merged_ipp)
    if merged is None:
        if surviving is not None:
            # Applied already (a resend): the merged IPP is gone, the survivor is there.
            return Result(ack="", ack_code="AA", patient=surviving.patient)
        raise MessageRefused(
            "AE",
            UNKNOWN_KEY_IDENTIFIER,
            f"Neither the MRG-1 IPP {merged_ipp!r} nor the PID-3 IPP {surviving_ipp!r} is known"
            " for this establishment.",
            "MRG^1^1",
        )
    detail = _audit_detail(
        establishment, header, merged_ipp=merged_ipp, surviving_ipp=surviving_ipp
    )
    if surviving is None:
        # The surviving IPP is new here: the record simply takes it (as an A47 would).
        merged.value = surviving_ipp
        merged.save(update_fields=["value"])
        audit.record(
            actor=actor,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=merged.patient,
            detail={**detail, "changed": ["ipp"]},
        )
        return Result(ack="", ack_code="AA", patient=merged.patient, changed=["ipp"])
    target = surviving.patient
    if merged.patient_id != target.pk:
        source = merged.patient
        try:
            target = patient_merge(source=source, target=target, by=actor, detail=detail)
        except PatientMergeRefused as refusal:
            if refusal.reason == "qualified_ins":
                raise MessageRefused(
                    "AE",
                    DUPLICATE_KEY_IDENTIFIER,
                    "The two IPPs designate two records with different qualified INS: two"
                    " persons, not merged.",
                    "MRG^1^1",
                ) from refusal
            conflict = _merge_conflict(
                source=source,
                target=target,
                establishment=establishment,
                header=header,
                actor=actor,
                differing=refusal.differing,
            )
            return Result(ack="", ack_code="AA", patient=target, conflict=conflict)
    # The merged IPP disappears from the establishment's domain.
    PatientIdentifier.objects.filter(pk=merged.pk).delete()
    if merged.patient_id == target.pk and merged.patient_id == surviving.patient_id:
        audit.record(
            actor=actor,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=target,
            detail={**detail, "changed": ["ipp"], "removed_ipp": merged_ipp},
        )
    return Result(ack="", ack_code="AA", patient=target, changed=["ipp"])


def _announce_admission(*, patient: Patient, establishment: Establishment, trigger: str) -> None:
    """Send portal.events.patient_admitted once the message's transaction has committed.

    Not for a message that ran into an identity conflict: which regional patient is admitted
    is then a question for identity vigilance, and the priors of the wrong one must not move.
    """

    def send():
        # Robust: the message is committed; a failing receiver must not turn its ACK into
        # an AE that would make the sender resend what was applied.
        answers = events.patient_admitted.send_robust(
            sender=Patient, patient=patient, establishment=establishment, trigger=trigger
        )
        for receiver, answer in answers:
            if isinstance(answer, Exception):
                logger.error("patient_admitted receiver %r failed", receiver, exc_info=answer)

    transaction.on_commit(send)


def _apply(message, header: Header, establishment: Establishment) -> Result:
    actor = _feed_actor(establishment)
    if header.trigger_event in {MERGE_EVENT, IDENTIFIER_CHANGE_EVENT}:
        apply = _apply_merge if header.trigger_event == MERGE_EVENT else _apply_identifier_change
        try:
            with transaction.atomic():
                return apply(
                    message=message, establishment=establishment, header=header, actor=actor
                )
        except ValidationError as error:
            raise MessageRefused("AE", DATA_TYPE_ERROR, " ".join(error.messages), "MRG") from error
    identity = read_identity(message, establishment)
    try:
        with transaction.atomic():
            result = None
            if header.trigger_event in UPDATING_EVENTS:
                result = _apply_update(
                    identity=identity, establishment=establishment, header=header, actor=actor
                )
            if result is None:
                result = _apply_registration(
                    identity=identity, establishment=establishment, header=header, actor=actor
                )
            if result.conflict is None:
                _apply_sharing_opposition(
                    patient=result.patient,
                    identity=identity,
                    establishment=establishment,
                    actor=actor,
                )
                _apply_declared_gp(
                    patient=result.patient,
                    identity=identity,
                    establishment=establishment,
                    header=header,
                    actor=actor,
                    result=result,
                )
            if header.trigger_event in ADMITTING_EVENTS and result.conflict is None:
                _announce_admission(
                    patient=result.patient,
                    establishment=establishment,
                    trigger=header.trigger_event,
                )
    except ValidationError as error:
        raise MessageRefused("AE", DATA_TYPE_ERROR, " ".join(error.messages), "PID") from error
    return result


# --- ACK --------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    for raw, escaped in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\")):
        text = text.replace(raw, escaped)
    return text.replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")


def build_ack(
    header: Header,
    ack_code: str,
    *,
    error_code: str = "",
    text: str = "",
    location: str = "",
    severity: str = "E",
    now: dt.datetime | None = None,
) -> str:
    """An HL7 v2.5 general acknowledgement (MSH, MSA, and ERR when something was wrong)."""
    now = now or timezone.now()
    stamp = now.strftime("%Y%m%d%H%M%S")
    segments = [
        "|".join(
            [
                "MSH",
                ENCODING_CHARACTERS,
                header.receiving_application,
                header.receiving_facility,
                header.sending_application,
                header.sending_facility,
                stamp,
                "",
                f"ACK^{header.trigger_event}^ACK" if header.trigger_event else "ACK",
                f"ACK{stamp}{now.microsecond:06d}",
                "P",
                header.version if header.version.startswith("2.") else "2.5",
            ]
        ),
        "|".join(["MSA", ack_code, header.control_id]),
    ]
    if error_code:
        segments.append(
            "|".join(
                [
                    "ERR",
                    "",
                    location,
                    f"{error_code}^{ERROR_NAMES.get(error_code, '')}^HL70357",
                    severity,
                    "",
                    "",
                    "",
                    _escape(text)[:250],
                ]
            )
        )
    return "\r".join(segments) + "\r"


def _audit_refusal(*, header: Header, refusal: MessageRefused, establishment, peer: str):
    audit.record(
        actor=_feed_actor(establishment) if establishment else Actor(name="HL7 feed", ip=peer),
        event=(
            audit.AuditEventId.SECURITY_ALERT
            if establishment is None
            else audit.AuditEventId.IMPORT
        ),
        action=audit.AuditAction.EXECUTE,
        outcome=(
            audit.AuditOutcome.SERIOUS_FAILURE
            if refusal.ack_code == "AR"
            else audit.AuditOutcome.MINOR_FAILURE
        ),
        detail={
            "source": "hl7",
            "sending_facility": header.sending_facility[:100],
            "message": header.control_id[:100],
            "event": header.trigger_event[:10],
            "ack": refusal.ack_code,
            "error": refusal.error_code,
            "reason": refusal.text[:300],
        },
    )


def _refused(*, header, refusal: MessageRefused, establishment, peer: str) -> Result:
    try:
        _audit_refusal(header=header, refusal=refusal, establishment=establishment, peer=peer)
    except Exception:  # the ACK must still go out; the log keeps the failure
        logger.exception("HL7 refusal could not be audited")
    return Result(
        ack=build_ack(
            header,
            refusal.ack_code,
            error_code=refusal.error_code,
            text=refusal.text,
            location=refusal.location,
        ),
        ack_code=refusal.ack_code,
        error=refusal.text,
    )


def handle_message(text: str, *, peer: str = "") -> Result:
    """Apply one HL7 message and return its ACK; never raises for a bad message."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r") + "\r"
    header = _read_header(text)
    establishment = None
    try:
        message = _parse(text)
        establishment = _establishment(header)
        _check_message_type(message, header)
        result = _apply(message, header, establishment)
    except MessageRefused as refusal:
        return _refused(header=header, refusal=refusal, establishment=establishment, peer=peer)
    except Exception:
        # A bug or a database failure: the sender gets an AE (it will resend), the
        # listener keeps serving, and the log has the traceback.
        logger.exception("HL7 message %s could not be applied", header.control_id)
        refusal = MessageRefused("AE", APPLICATION_INTERNAL_ERROR, "Internal error; resend later.")
        return _refused(header=header, refusal=refusal, establishment=establishment, peer=peer)
    if result.conflict is not None:
        result.error = (
            "Identity conflict with the regional patient: sent to identity vigilance,"
            f" nothing merged (differing: {', '.join(result.conflict.differing_traits)})."
        )
        result.ack = build_ack(
            header,
            "AA",
            error_code=APPLICATION_INTERNAL_ERROR,
            text=result.error,
            location="PID",
            severity="W",
        )
    elif result.warning:
        result.error = result.warning
        result.ack = build_ack(
            header,
            "AA",
            error_code=result.warning_code,
            text=result.warning,
            location=result.warning_location,
            severity="W",
        )
    else:
        result.ack = build_ack(header, "AA")
    return result


def refusal_ack(text: str) -> str:
    """The AR for a message refused before reading (too large): header read when possible."""
    return build_ack(
        _read_header(text),
        "AR",
        error_code=APPLICATION_INTERNAL_ERROR,
        text="The message exceeds the size limit of this listener.",
    )
