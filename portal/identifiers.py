"""French health identifiers: RPPS, FINESS and the INS matricule (NIR/NIA).

Each check is a pure function so forms, services and imports share it.
"""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# ASCII digits only (\d would take any Unicode digit) and whole-string matches (``$``
# would accept a trailing newline).
_RPPS_RE = re.compile(r"[0-9]{11}")
_FINESS_RE = re.compile(r"([0-9]{2}|2A|2B)[0-9]{7}")
# Sex (1-4, 7-8 for temporary numbers), year, month (01-12, 20-42 or 50-99 for unknown
# months), département (2A/2B for Corsica), commune, order number, key.
_MATRICULE_RE = re.compile(
    r"[1-478][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])([0-9]{2}|2A|2B)[0-9]{6}[0-9]{2}"
)


def luhn_is_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit to ``prefix``."""
    for check in "0123456789":
        if luhn_is_valid(prefix + check):
            return prefix + check
    raise AssertionError("unreachable: one digit always completes a Luhn number")


def validate_rpps(value: str) -> None:
    """RPPS: 11 digits, the last one a Luhn key over the first ten."""
    if not _RPPS_RE.fullmatch(value or ""):
        raise ValidationError(_("An RPPS number has exactly 11 digits."), code="rpps_format")
    if not luhn_is_valid(value):
        raise ValidationError(
            _("This RPPS number has a wrong check digit: please check it."), code="rpps_key"
        )


def validate_finess(value: str) -> None:
    """FINESS: 9 characters, the first two a département (2A/2B for Corsica)."""
    if not _FINESS_RE.fullmatch(value or ""):
        raise ValidationError(_("A FINESS number has 9 characters."), code="finess_format")


def _matricule_number(first13: str) -> int:
    # Corsica: 2A and 2B count as 19 and 18 in the key computation.
    return int(first13.replace("2A", "19").replace("2B", "18"))


def ins_key(first13: str) -> str:
    return f"{97 - _matricule_number(first13) % 97:02d}"


def validate_ins_matricule(value: str) -> None:
    """INS matricule (NIR or NIA): 13 characters then a two-digit key, 97 - (N mod 97)."""
    value = (value or "").upper()
    if not _MATRICULE_RE.fullmatch(value):
        raise ValidationError(
            _("An INS matricule has 15 characters (13 then a 2-digit key)."),
            code="ins_format",
        )
    if ins_key(value[:13]) != value[13:]:
        raise ValidationError(
            _("This INS matricule has a wrong key: please check it."), code="ins_key"
        )
