"""Commune names of the INSEE official geographic code (COG), for the birthplace of a patient.

The INS strict traits keep the birthplace as its INSEE code (``Patient.birth_place_code``);
people read a commune's name. ``portal/data/communes.tsv`` holds every code of the COG 2026
(current communes, municipal arrondissements, delegated and associated communes), taken from
``@etalab/decoupage-administratif`` 6.0.0 on the npm registry (MIT licence, data.gouv.fr), its
``data/communes.json`` built from the INSEE file of 1 January 2026. To refresh it, take the
package of the new year and write ``code<TAB>nom`` for each entry, the current commune first
where a code is shared (see the file's header).

Codes 99xxx are countries (a birth abroad): the file holds communes only, so they are named as
a birth abroad with their code. A code that is in no list (a commune merged long ago, a typo
kept from an old record) is shown as such, never guessed.
"""

from __future__ import annotations

import functools
from importlib import resources

from django.utils.translation import gettext as _

COMMUNES_FILE = "communes.tsv"


@functools.cache
def _communes() -> dict[str, str]:
    text = resources.files("portal").joinpath("data", COMMUNES_FILE).read_text(encoding="utf-8")
    names = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        code, _tab, name = line.partition("\t")
        names[code] = name
    return names


def commune_name(code: str) -> str | None:
    """The commune's name for an INSEE commune code, or None if the COG does not know it."""
    return _communes().get((code or "").strip().upper())


def birth_place_label(code: str) -> str:
    """What the patient page shows for a birthplace code: the commune's name, or what the code
    is when it names no commune."""
    code = (code or "").strip().upper()
    name = commune_name(code)
    if name:
        return name
    if code.startswith("99"):
        return _("abroad (INSEE country code %(code)s)") % {"code": code}
    return _("INSEE code %(code)s (unknown commune)") % {"code": code}
