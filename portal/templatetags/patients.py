"""How the patient's traits read on every page that shows the patient banner."""

from django import template

from portal.communes import birth_place_label

register = template.Library()


@register.filter
def birth_place(code: str) -> str:
    """``{{ patient.birth_place_code|birth_place }}``: the commune's name, not its INSEE code."""
    return birth_place_label(code)
