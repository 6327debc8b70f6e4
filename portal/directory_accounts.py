"""From the national directory to the portal's professionals: the one place that turns a person
of the directory (portal.directory_models.DirectoryPerson) into a Professional with its account,
or brings an existing Professional up to date with the directory.

Three callers share it: the directory import (a linked professional's specialty and practice
sites follow the newer extract), the Pro Santé Connect sign-in (the first sign-in finds the
professional by national identifier and links the account) and the scoped administration pages
(a coordinator adds a member found in the directory, who may have no account yet).

The directory is the source of the facts it holds (names, profession, specialty, practice sites);
what the portal adds (a primary establishment, roles, a coordinator's affiliation) is never taken
away by it: a practice site the directory no longer lists is left to the establishment's
administration, which knows whether the doctor still works there.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from portal import audit
from portal.audit import Actor
from portal.directory_models import DirectoryActivity, DirectoryIdType, DirectoryPerson
from portal.models import Affiliation, Establishment, Profession, Professional, Specialty, User

# An account made from the directory has no e-mail address of its own (the extract lists the
# practice's, not the person's): a placeholder in the reserved ".invalid" domain (RFC 2606)
# keeps User.email unique and is never written to (portal.notifications skips it).
PLACEHOLDER_EMAIL_DOMAIN = "annuaire.invalid"

PROFESSION_BY_CODE = {
    "10": Profession.PHYSICIAN,
    "50": Profession.MIDWIFE,
    "60": Profession.NURSE,
}

# The portal's specialties finer than the directory's ordinal ones: a fetal medicine
# specialist is listed in gynaecology-obstetrics, and stays a fetal medicine specialist.
REFINES = {
    Specialty.FETAL_MEDICINE: Specialty.GYNECOLOGY_OBSTETRICS,
    Specialty.GYNECOLOGIC_SURGERY: Specialty.GYNECOLOGY_OBSTETRICS,
    Specialty.INTERVENTIONAL_RADIOLOGY: Specialty.RADIOLOGY,
}

TITLE_BY_CIVILITY = {"docteur": "Dr", "professeur": "Pr", "dr": "Dr", "pr": "Pr"}


class NotInDirectory(LookupError):
    """No active person of the directory has this national identifier (or not an RPPS one)."""


@dataclass
class Linked:
    professional: Professional
    created: bool
    affiliations_added: list[str]
    specialty_changed: bool


def placeholder_email(national_id: str) -> str:
    return f"{national_id}@{PLACEHOLDER_EMAIL_DOMAIN}"


def has_placeholder_email(email: str | None) -> bool:
    return (email or "").strip().lower().endswith("@" + PLACEHOLDER_EMAIL_DOMAIN)


def active_person(national_id: str) -> DirectoryPerson:
    """The active RPPS person of the directory with this national identifier (``8`` + RPPS, as
    Pro Santé Connect's ``SubjectNameID`` gives it, or the bare 11-digit RPPS)."""
    national_id = (national_id or "").strip()
    if len(national_id) == 11 and national_id.isdigit():
        national_id = DirectoryIdType.RPPS + national_id
    person = DirectoryPerson.objects.filter(
        national_id=national_id, id_type=DirectoryIdType.RPPS, is_active=True
    ).first()
    if person is None or not person.rpps:
        raise NotInDirectory(national_id)
    return person


def establishments_of(person: DirectoryPerson, finess: list[str] | None = None):
    """The portal's establishments where ``person`` practises: by the FINESS of the site or of
    the legal entity of their in-region activities, plus ``finess`` (the practice sites the
    sign-in's claims name)."""
    numbers = set(finess or ())
    for site, legal in DirectoryActivity.objects.filter(person=person).values_list(
        "finess_site", "finess_legal"
    ):
        numbers.update(n for n in (site, legal) if n)
    if not numbers:
        return Establishment.objects.none()
    return Establishment.objects.filter(finess__in=numbers).order_by("name")


def _title(person: DirectoryPerson) -> str:
    return TITLE_BY_CIVILITY.get(person.civility.strip().lower(), "")


def link_professional(
    person: DirectoryPerson, *, by: Actor, finess: list[str] | None = None, user: User | None = None
) -> Linked:
    """The Professional of ``person``, created with an account if the portal has none yet, and
    brought up to date with the directory (specialty, practice sites as affiliations); audited.

    ``user``: the account to link when the portal has no professional with this RPPS yet (the
    Pro Santé Connect sign-in brings one); without it a new account gets a placeholder e-mail
    and no usable password, and the doctor signs in through Pro Santé Connect.
    """
    if not person.rpps or not person.is_active:
        raise NotInDirectory(person.national_id)
    with transaction.atomic():
        professional = (
            Professional.objects.select_for_update().select_related("user").filter(rpps=person.rpps)
        ).first()
        created = professional is None
        if created:
            if user is not None and Professional.objects.filter(user=user).exists():
                # One account, one professional: the sign-in of another RPPS on this account
                # is a mix-up to look into, not a profile to overwrite.
                raise ValueError(f"{user.email} is already another professional's account")
            if user is None:
                user = User.objects.filter(email=placeholder_email(person.national_id)).first()
            if user is None:
                user = User.objects.create_user(
                    placeholder_email(person.national_id),
                    None,
                    first_name=person.first_name.title(),
                    last_name=person.last_name.upper(),
                )
            professional = Professional.objects.create(
                user=user,
                rpps=person.rpps,
                title=_title(person),
                profession=PROFESSION_BY_CODE.get(person.profession_code, Profession.OTHER),
                specialty=person.specialty,
            )
        specialty_changed = (
            bool(person.specialty)
            and professional.specialty != person.specialty
            and REFINES.get(professional.specialty) != person.specialty
        )
        if specialty_changed:
            professional.specialty = person.specialty
            professional.save(update_fields=["specialty"])
        held = set(professional.affiliations.values_list("establishment_id", flat=True))
        has_primary = professional.affiliations.filter(is_primary=True).exists()
        added = []
        for establishment in establishments_of(person, finess):
            if establishment.pk in held:
                continue
            Affiliation.objects.create(
                professional=professional, establishment=establishment, is_primary=not has_primary
            )
            has_primary = True
            held.add(establishment.pk)
            added.append(establishment.finess)
        if created or specialty_changed or added:
            audit.record(
                actor=by,
                event=audit.AuditEventId.SECURITY_ALERT,
                event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                action=audit.AuditAction.CREATE if created else audit.AuditAction.UPDATE,
                obj=professional,
                detail={
                    "source": "directory",
                    "national_id": person.national_id,
                    "created": created,
                    "specialty": professional.specialty if specialty_changed else None,
                    "affiliations_added": added,
                },
            )
    return Linked(professional, created, added, specialty_changed)


def refresh_linked_professionals(*, by: Actor, persons=None) -> int:
    """Bring every professional the portal already has up to date with the directory (after an
    import): specialty and new practice sites. Persons without a professional are left alone:
    the directory is a list to look people up in, not a list of accounts. Returns how many
    professionals changed."""
    if persons is None:
        persons = DirectoryPerson.objects.all()
    # An inactive person (gone from the region) cannot be linked: their professional keeps
    # what the portal knows.
    persons = persons.filter(is_active=True, id_type=DirectoryIdType.RPPS)
    rpps_in_portal = Professional.objects.filter(rpps__isnull=False).values("rpps")
    changed = 0
    for person in persons.filter(rpps__in=rpps_in_portal).iterator(chunk_size=500):
        linked = link_professional(person, by=by)
        changed += bool(linked.specialty_changed or linked.affiliations_added)
    return changed


def search(query: str, *, limit: int = 20):
    """Active persons of the directory by name (start of the last or first name, accents and case
    ignored by the database's collation as stored: upper case in the extract) or by RPPS."""
    query = (query or "").strip()
    if len(query) < 2:
        return DirectoryPerson.objects.none()
    persons = DirectoryPerson.objects.filter(is_active=True)
    if query.isdigit():
        persons = persons.filter(Q(rpps__startswith=query) | Q(national_id__startswith=query))
    else:
        condition = Q()
        for word in query.split():
            condition &= Q(last_name__istartswith=word) | Q(first_name__istartswith=word)
        persons = persons.filter(condition)
    return persons.prefetch_related("activities").order_by("last_name", "first_name")[:limit]
