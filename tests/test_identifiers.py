"""French health identifiers as an identity-vigilance officer would check them by hand.

The expected keys are computed here with the textbook algorithms (or written out as
literals worked out on paper), never with the functions under test.
"""

import pytest
from django.core.exceptions import ValidationError

from portal.identifiers import validate_finess, validate_ins_matricule, validate_rpps

# --- Independent reference computations ------------------------------------------------------


def textbook_luhn_digit(prefix: str) -> str:
    """The Luhn check digit: double every second digit starting from the right of the prefix."""
    total = 0
    for position, char in enumerate(reversed(prefix)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def textbook_nir_key(first13: str) -> str:
    """97 - (N mod 97), Corsica read as département 20 minus 1 (2A) or 2 (2B) millions.

    This is the INSEE wording of the rule; it is the same as reading 2A as 19 and 2B as 18,
    written differently so that the test does not repeat the code it checks.
    """
    department = first13[5:7]
    if department in ("2A", "2B"):
        number = int(first13[:5] + "20" + first13[7:])
        number -= {"2A": 1_000_000, "2B": 2_000_000}[department]
    else:
        number = int(first13)
    return f"{97 - number % 97:02d}"


def refused(validator, value) -> str:
    """The code of the ValidationError ``validator`` raises for ``value``."""
    with pytest.raises(ValidationError) as error:
        validator(value)
    return error.value.code


# --- RPPS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rpps",
    [
        "79927398713",  # the classic Luhn example, which happens to have 11 digits
        "10003456786",
        "10100000008",
        "99700000013",  # the range the test personas use
    ],
)
def test_a_well_formed_rpps_number_is_accepted(rpps):
    validate_rpps(rpps)


def test_the_reference_luhn_agrees_with_the_literal_examples():
    # Guards the guard: the literals above really are Luhn-valid.
    for rpps in ("79927398713", "10003456786", "10100000008", "99700000013"):
        assert textbook_luhn_digit(rpps[:10]) == rpps[10]


@pytest.mark.parametrize("prefix", [f"10{n:08d}" for n in range(0, 2_000_000, 99_991)])
def test_every_rpps_completed_by_the_textbook_luhn_digit_is_accepted(prefix):
    validate_rpps(prefix + textbook_luhn_digit(prefix))


@pytest.mark.parametrize("prefix", [f"10{n:08d}" for n in range(0, 2_000_000, 199_999)])
def test_any_other_last_digit_is_a_wrong_rpps_key(prefix):
    good = textbook_luhn_digit(prefix)
    for digit in "0123456789":
        if digit != good:
            assert refused(validate_rpps, prefix + digit) == "rpps_key"


@pytest.mark.parametrize(
    "typo",
    [
        "79927398710",  # last digit mistyped
        "79927398613",  # one digit mistyped in the middle
        "97927398713",  # two neighbours swapped
    ],
)
def test_a_mistyped_rpps_number_is_refused_for_its_key(typo):
    assert refused(validate_rpps, typo) == "rpps_key"


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        "7992739871",  # 10 digits
        "799273987130",  # 12 digits
        "7992739871A",
        "799 2739871",
        "+9927398713",
    ],
)
def test_an_rpps_number_that_is_not_eleven_digits_is_refused_for_its_format(value):
    assert refused(validate_rpps, value) == "rpps_format"


def test_an_rpps_number_with_a_trailing_line_break_is_refused_not_crashed_on():
    # `$` would match before a final newline and the Luhn check would then crash on
    # int("\n"): an import carrying a line break must get a validation message, not a 500.
    assert refused(validate_rpps, "79927398713\n") == "rpps_format"


@pytest.mark.parametrize(
    "value",
    [
        "７９９２７３９８７１３",  # full-width digits, as a Japanese or Chinese keyboard types them
        "٧٩٩٢٧٣٩٨٧١٣",  # Arabic-Indic digits
    ],
)
def test_an_rpps_number_written_with_non_latin_digits_is_refused(value):
    # \d would match every Unicode digit and int() reads them: the same RPPS could then be
    # stored a second time, spelt differently, escaping the unique constraint.
    assert refused(validate_rpps, value) == "rpps_format"


# --- FINESS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "finess",
    [
        "370000481",  # CHRU de Tours
        "180000028",  # CH de Bourges
        "2A0000012",  # Corse-du-Sud
        "2B0000012",  # Haute-Corse
        "970000000",  # overseas
    ],
)
def test_a_nine_character_finess_is_accepted(finess):
    validate_finess(finess)


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        "37000048",  # 8 characters
        "3700004811",  # 10 characters
        "2C0000012",  # no such département
        "A20000012",
        "37000048A",
        "3A0000012",
        "2A000001",  # Corsica but one digit short
        "37 000048",
    ],
)
def test_a_malformed_finess_is_refused(value):
    assert refused(validate_finess, value) == "finess_format"


def test_a_finess_with_a_trailing_line_break_is_refused():
    # The same trailing-newline trap as for the RPPS.
    assert refused(validate_finess, "370000481\n") == "finess_format"


# --- INS matricule (NIR / NIA) ---------------------------------------------------------------


def test_the_reference_key_gives_15_for_the_textbook_nir():
    # 1 37 04 76 243 484 — a man born in April 1937 in Seine-Maritime: key 15.
    assert textbook_nir_key("1370476243484") == "15"


@pytest.mark.parametrize(
    "matricule",
    [
        "137047624348415",  # the textbook NIR
        "256033726100114",  # Jeanne Dupont, the personas' patient
        "185052A00412356",  # born in Corse-du-Sud: 2A counts as 19
        "185052B00412383",  # born in Haute-Corse: 2B counts as 18
        "185057600409597",  # N is a multiple of 97: the key is 97, not 00
        "185052a00412356",  # typed in lower case: read as 2A
    ],
)
def test_a_matricule_with_its_right_key_is_accepted(matricule):
    validate_ins_matricule(matricule)


@pytest.mark.parametrize(
    "first13",
    [
        "1370476243484",
        "2560337261001",
        "185052A004123",
        "185052B004123",
        "285122B123456",
        "1991099123456",
        "2771299999001",
        "800012A000001",
        "400012B000001",
    ],
)
def test_the_key_accepted_is_the_textbook_key_and_no_other(first13):
    good = textbook_nir_key(first13)
    validate_ins_matricule(first13 + good)
    for key in ("01", "50", "96", "97"):
        if key != good:
            assert refused(validate_ins_matricule, first13 + key) == "ins_key"


@pytest.mark.parametrize(
    "matricule",
    [
        "137047624348414",  # textbook NIR, key off by one
        "185052A00412383",  # 2A number carrying the 2B key
        "185052B00412356",  # 2B number carrying the 2A key
        "185052A00412329",  # key computed as if 2A were 20
        "185057600409500",  # 97 written as 00
        "137047624348451",  # key digits swapped
    ],
)
def test_a_matricule_with_a_wrong_key_is_refused_for_its_key(matricule):
    assert refused(validate_ins_matricule, matricule) == "ins_key"


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        "1370476243484",  # 13 characters: the key is missing
        "13704762434841",  # 14 characters
        "1370476243484150",  # 16 characters
        "537047624348409",  # sex digit 5 does not exist (the key itself is right)
        "137137624348462",  # month 13 does not exist (the key itself is right)
        "185052C00412356",  # 2C is not Corsica
        "1 37 04 76 243 484 15",
        "13704762434841A",
    ],
)
def test_a_malformed_matricule_is_refused_for_its_format(value):
    assert refused(validate_ins_matricule, value) == "ins_format"
