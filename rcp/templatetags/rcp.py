"""Labels of the FRCP codes in templates."""

from django import template

from rcp import frcp
from rcp.quorum import specialty_label

register = template.Library()


def _label(value_set, code) -> str:
    return value_set.label(code) if code and code in value_set else (code or "—")


@register.filter
def treatment_labels(codes) -> list[str]:
    return [_label(frcp.TYPE_TRAITEMENT, code) for code in codes or []]


@register.filter
def quorum_label(code) -> str:
    return _label(frcp.STATUT_QUORUM, code)


@register.filter
def presentation_label(code) -> str:
    """The case's FRCP status (STATUT_CAS) in the reader's language."""
    return frcp.presentation_label(code)


@register.filter
def frcp_label(code, value_set: str) -> str:
    """``{{ case.phase|frcp_label:"PHASE" }}``"""
    return _label(getattr(frcp, value_set), code)


@register.filter
def topography_label(code) -> str:
    return frcp.topography_label(code) or code if code else "—"


@register.filter
def morphology_label(code) -> str:
    return frcp.morphology_label(code) or code if code else "—"


@register.filter
def specialty(code) -> str:
    return specialty_label(code)
