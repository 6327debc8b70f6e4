"""The scoped administration: the regional administrator (establishments, DICOM declaration,
roles), the establishments' administrators (their professionals and scoped roles); who sees
what, what is audited, what a bad input or a second click does."""

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from imaging.models import CallingAETitle, DicomDeclaration
from portal import administration, directory_accounts, permissions, roles
from portal.audit import Actor
from portal.directory_models import DirectoryActivity, DirectoryIdType, DirectoryPerson
from portal.identifiers import luhn_complete
from portal.models import (
    Affiliation,
    AuditEvent,
    AuditEventId,
    AuditEventType,
    AuditOutcome,
    Establishment,
    Professional,
    User,
)
from tests import builders
from tests.conftest import client_for
from tests.permission_matrix import (
    bourges_administration,
    regional_administrator,
    tours_administration,
)

SECURITY = AuditEventId.SECURITY_ALERT


def _directory_person(
    rpps_prefix: str, first: str, last: str, *, finess: str = ""
) -> DirectoryPerson:
    """A physician of the national directory's extract, with no account in the portal."""
    rpps = luhn_complete(rpps_prefix)
    person = DirectoryPerson.objects.create(
        national_id=DirectoryIdType.RPPS + rpps,
        id_type=DirectoryIdType.RPPS,
        rpps=rpps,
        civility="DR",
        first_name=first.upper(),
        last_name=last.upper(),
        profession_code="10",
        profession_label="Médecin",
        specialty="radiologie",
        specialty_label="Radiologie",
    )
    if finess:
        DirectoryActivity.objects.create(
            person=person, fingerprint=f"{rpps}-{finess}", finess_site=finess, name="Site"
        )
    return person


def _events(**filters):
    return AuditEvent.objects.filter(outcome=AuditOutcome.SUCCESS, **filters)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def _page_text(response) -> str:
    return response.content.decode()


# --- Who sees what ---------------------------------------------------------------------------


def test_the_menu_offers_administration_only_to_administrators(world):
    home = reverse("administration-home")
    assert home not in _page_text(client_for(world.oncologist.user).get(reverse("home")))
    assert home in _page_text(client_for(tours_administration(world)).get(reverse("home")))
    assert home in _page_text(client_for(regional_administrator(world)).get(reverse("home")))


def test_the_regional_administrator_sees_every_establishment(world):
    response = client_for(regional_administrator(world)).get(reverse("administration-home"))
    assert response.status_code == 200
    assert [e.name for e in response.context["establishments"]] == [
        "CH de Bourges",
        "CHRU de Tours",
        "MSP de Vierzon",
    ]
    assert reverse("administration-establishment-create") in _page_text(response)


def test_an_establishment_administrator_sees_only_their_establishment(world):
    client = client_for(tours_administration(world))
    response = client.get(reverse("administration-home"))
    assert [e.name for e in response.context["establishments"]] == ["CHRU de Tours"]
    assert reverse("administration-establishment-create") not in _page_text(response)
    # Another establishment's professionals: 404 like a missing one, and the refusal audited.
    refusals = AuditEvent.objects.filter(event_id=SECURITY, outcome=AuditOutcome.MINOR_FAILURE)
    before = refusals.count()
    bourges = reverse("administration-professionals", args=[world.bourges.pk])
    assert client.get(bourges).status_code == 404
    assert refusals.count() == before + 1
    # Its own establishment's identity, DICOM declaration and the roles are the region's.
    assert (
        client.get(reverse("administration-establishment", args=[world.tours.pk])).status_code
        == 404
    )
    assert client.get(reverse("administration-dicom", args=[world.tours.pk])).status_code == 404
    assert client.get(reverse("administration-roles")).status_code == 403


def test_the_permission_alone_or_a_superuser_does_not_make_a_regional_administrator(world):
    # The care-relationship permission without an affiliation administers nothing.
    officer = builders.user(
        email="sans.etablissement@mirc.test", permissions=["portal.change_carerelationship"]
    )
    assert client_for(officer).get(reverse("administration-home")).status_code == 403
    assert client_for(world.admin_user).get(reverse("administration-roles")).status_code == 403


# --- Establishments --------------------------------------------------------------------------


def _establishment_post(establishment=None, **changes) -> dict:
    values = {
        "name": "Centre hospitalier de Vendôme",
        "finess": "410000087",
        "city": "Vendôme",
        "kind": "ch",
        "patient_id_issuer": "CH-VENDOME",
        "hl7_sending_facility": "",
        "contact_name": "Bureau des entrées",
        "contact_phone": "02 54 23 33 33",
        "contact_email": "entrees@ch-vendome.test",
    }
    if establishment is not None:
        values.update(
            {name: getattr(establishment, name) for name in administration.ESTABLISHMENT_FIELDS}
        )
        values["seen"] = administration.establishment_fingerprint(establishment)
    values.update(changes)
    return values


def test_the_regional_administrator_creates_an_establishment_with_its_contacts(world):
    admin = regional_administrator(world)
    response = client_for(admin).post(
        reverse("administration-establishment-create"), _establishment_post()
    )
    created = Establishment.objects.get(finess="410000087")
    assert response.status_code == 302
    assert (created.city, created.contact_email) == ("Vendôme", "entrees@ch-vendome.test")
    event = _events(event_id=SECURITY, object_type="portal.establishment").get()
    assert event.event_type == AuditEventType.SOFTWARE_CONFIGURATION
    assert event.actor == admin


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"finess": "41000"}, "finess"),
        ({"finess": "370000481"}, "finess"),  # Tours'
        ({"contact_email": "pas une adresse"}, "contact_email"),
        ({"kind": "hopital"}, "kind"),
    ],
)
def test_a_bad_establishment_is_refused_with_a_message_and_nothing_created(world, changes, field):
    client = client_for(regional_administrator(world))  # signing in is audited: before
    count, events = Establishment.objects.count(), AuditEvent.objects.count()
    response = client.post(
        reverse("administration-establishment-create"), _establishment_post(**changes)
    )
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert Establishment.objects.count() == count
    assert AuditEvent.objects.count() == events


def test_editing_an_establishment_is_audited_with_its_changes(world):
    admin = regional_administrator(world)
    url = reverse("administration-establishment", args=[world.bourges.pk])
    page = client_for(admin).get(url)
    assert page.context["form"]["seen"].value() == administration.establishment_fingerprint(
        world.bourges
    )
    response = client_for(admin).post(
        url, _establishment_post(world.bourges, contact_phone="02 48 48 48 48")
    )
    assert response.status_code == 302
    world.bourges.refresh_from_db()
    assert world.bourges.contact_phone == "02 48 48 48 48"
    event = _events(event_id=SECURITY, object_type="portal.establishment").get()
    assert event.detail["changes"] == {"contact_phone": ["", "02 48 48 48 48"]}


def test_an_edit_made_on_stale_values_is_refused(world):
    admin = regional_administrator(world)
    url = reverse("administration-establishment", args=[world.bourges.pk])
    first = _establishment_post(world.bourges, city="Bourges-Nord")
    second = _establishment_post(world.bourges, contact_name="Standard")
    assert client_for(admin).post(url, first).status_code == 302
    response = client_for(admin).post(url, second)
    assert response.status_code == 200
    assert "nothing was saved" in " ".join(_messages(response)) or "rien" in " ".join(
        _messages(response)
    )
    world.bourges.refresh_from_db()
    assert (world.bourges.city, world.bourges.contact_name) == ("Bourges-Nord", "")
    # The form now shows the values of the first save, ready for a new attempt.
    assert response.context["form"]["city"].value() == "Bourges-Nord"


def test_the_service_refuses_an_establishment_administrator(world):
    with pytest.raises(PermissionDenied):
        administration.establishment_create(
            by=Actor(user=tours_administration(world)),
            fields=_establishment_post(),
        )
    assert not Establishment.objects.filter(finess="410000087").exists()


# --- The DICOM declaration -------------------------------------------------------------------


def _declaration_post(world, **changes) -> dict:
    values = {
        "pacs_ae_title": "TOURS_PACS",
        "pacs_host": "pacs.chru-tours.test",
        "pacs_port": "11112",
        "prefetch_enabled": "on",
        "prefetch_years": "",
        "prefetch_max_studies": "",
        "prefetch_modalities_first": "CT,MR",
        "calling_ae_titles": "TOURS_MOD1\nTOURS_PACS 10.1.2.3",
        "seen": _declaration_seen(world.tours),
    }
    values.update(changes)
    return values


def _declaration_seen(establishment) -> str:
    from imaging.administration import declaration_fingerprint, declaration_of

    return declaration_fingerprint(declaration_of(establishment))


def test_the_regional_administrator_declares_an_establishments_dicom_access(world):
    admin = regional_administrator(world)
    url = reverse("administration-dicom", args=[world.tours.pk])
    assert client_for(admin).get(url).status_code == 200
    response = client_for(admin).post(url, _declaration_post(world))
    assert response.status_code == 302
    declaration = DicomDeclaration.objects.get(establishment=world.tours)
    assert (declaration.pacs_ae_title, declaration.pacs_port) == ("TOURS_PACS", 11112)
    assert dict(declaration.calling_ae_titles.values_list("ae_title", "allowed_address")) == {
        "TOURS_MOD1": None,
        "TOURS_PACS": "10.1.2.3",
    }
    assert _events(event_id=SECURITY, object_type="imaging.dicomdeclaration").count() == 1
    assert declaration.pacs_tls is False
    # A second save that drops a title removes it; the PACS now takes TLS (audited).
    client_for(admin).post(
        url, _declaration_post(world, calling_ae_titles="TOURS_MOD1", pacs_tls="on")
    )
    assert list(declaration.calling_ae_titles.values_list("ae_title", flat=True)) == ["TOURS_MOD1"]
    declaration.refresh_from_db()
    assert declaration.pacs_tls is True
    last = _events(event_id=SECURITY, object_type="imaging.dicomdeclaration").order_by("pk").last()
    assert last.detail["pacs_tls"] is True


@pytest.mark.parametrize(
    "changes",
    [
        {"calling_ae_titles": "UN_TITRE_BIEN_TROP_LONG"},
        {"calling_ae_titles": "BAD\\TITLE"},
        {"calling_ae_titles": "TOURS_MOD1 pas-une-adresse"},
        {"pacs_port": "70000"},
        {"pacs_host": ""},
    ],
)
def test_a_bad_dicom_declaration_changes_nothing(world, changes):
    response = client_for(regional_administrator(world)).post(
        reverse("administration-dicom", args=[world.tours.pk]), _declaration_post(world, **changes)
    )
    assert response.status_code == 200
    assert response.context["form"].errors
    assert not DicomDeclaration.objects.filter(establishment=world.tours).exists()


def test_a_calling_ae_title_of_another_establishment_is_refused(world):
    bourges = DicomDeclaration.objects.create(establishment=world.bourges)
    CallingAETitle.objects.create(declaration=bourges, ae_title="TOURS_MOD1")
    response = client_for(regional_administrator(world)).post(
        reverse("administration-dicom", args=[world.tours.pk]), _declaration_post(world)
    )
    assert "CH de Bourges" in " ".join(_messages(response))
    assert not DicomDeclaration.objects.filter(establishment=world.tours).exists()


# --- An establishment's professionals --------------------------------------------------------


def test_adding_a_directory_doctor_without_account_creates_them_affiliated(world):
    admin = tours_administration(world)
    person = _directory_person("9970055501", "Jeanne", "Aubert")
    url = reverse("administration-professionals", args=[world.tours.pk])
    found = client_for(admin).get(url, {"q": "aubert"})
    assert [p.national_id for p in found.context["lookup"].persons] == [person.national_id]
    response = client_for(admin).post(url, {"national_id": person.national_id})
    assert response.status_code == 302
    professional = Professional.objects.select_related("user").get(rpps=person.rpps)
    assert directory_accounts.has_placeholder_email(professional.user.email)
    affiliation = Affiliation.objects.get(professional=professional)
    assert (affiliation.establishment, affiliation.is_primary) == (world.tours, True)
    added = _events(event_id=SECURITY, object_type="portal.affiliation").get()
    assert added.actor == admin and added.detail["establishment"] == "370000481"
    page = client_for(admin).get(url)
    assert "AUBERT" in _page_text(page)


def test_a_doctor_the_directory_places_here_is_affiliated_once(world):
    person = _directory_person("9970055502", "Luc", "Berger", finess="370000481")
    response = client_for(tours_administration(world)).post(
        reverse("administration-professionals", args=[world.tours.pk]),
        {"national_id": person.national_id},
    )
    assert response.status_code == 302
    assert Affiliation.objects.filter(professional__rpps=person.rpps).count() == 1


@pytest.mark.parametrize("national_id", ["812345678901", "", "8" + "1" * 30])
def test_an_unknown_national_id_is_refused_and_nothing_created(world, national_id):
    client = client_for(tours_administration(world))
    counts = (User.objects.count(), Affiliation.objects.count(), AuditEvent.objects.count())
    response = client.post(
        reverse("administration-professionals", args=[world.tours.pk]),
        {"national_id": national_id},
        follow=True,
    )
    assert "annuaire" in " ".join(_messages(response)) or "directory" in " ".join(
        _messages(response)
    )
    assert (User.objects.count(), Affiliation.objects.count(), AuditEvent.objects.count()) == counts


def test_adding_someone_already_here_says_so(world):
    person = _directory_person("9970055503", "Inès", "Carré")
    client = client_for(tours_administration(world))
    url = reverse("administration-professionals", args=[world.tours.pk])
    client.post(url, {"national_id": person.national_id})
    events = AuditEvent.objects.count()
    response = client.post(url, {"national_id": person.national_id}, follow=True)
    assert "Carré".upper() in " ".join(_messages(response)).upper()
    assert AuditEvent.objects.count() == events


def test_removing_a_professional_from_the_establishment(world):
    admin = tours_administration(world)
    affiliation = world.surgeon.affiliations.get(establishment=world.tours)
    url = reverse("administration-affiliation-end", args=[world.tours.pk, affiliation.pk])
    assert client_for(admin).post(url).status_code == 302
    assert not world.surgeon.affiliations.exists()
    event = _events(event_id=SECURITY, object_type="portal.affiliation").get()
    assert event.action == "D" and event.actor == admin
    # A second click: the affiliation is gone, like any other id.
    assert client_for(admin).post(url).status_code == 404


def test_an_administrator_cannot_remove_their_own_affiliation(world):
    admin = tours_administration(world)
    own = admin.professional.affiliations.get()
    response = client_for(admin).post(
        reverse("administration-affiliation-end", args=[world.tours.pk, own.pk]), follow=True
    )
    assert _messages(response)
    assert Affiliation.objects.filter(pk=own.pk).exists()


# --- Roles -----------------------------------------------------------------------------------


def test_the_registry_takes_the_apps_roles_and_keeps_one_group_each():
    registry = roles.registry()
    assert {"rcp.add_committee", "expertise.add_pool"} <= set(
        registry[roles.REGIONAL_ADMIN].permissions
    )
    assert set(registry["programme"].permissions) == {
        "rcp.view_indicators",
        "expertise.view_indicators",
        "imaging.view_statement",  # every establishment's usage statements
        "imaging.view_activitymonth",
    }
    assert registry["billing"].establishment_scoped
    assert "imaging.view_affiliated_statements" in registry["billing"].permissions
    assert registry["establishment_director"].establishment_scoped
    assert not registry[roles.DATA_PROTECTION].establishment_scoped


def test_the_regional_administrator_may_create_committees_and_pools(world):
    admin = User.objects.get(pk=regional_administrator(world).pk)
    assert admin.has_perm("rcp.add_committee") and admin.has_perm("expertise.add_pool")
    assert Group.objects.get(name="role:regional_admin").user_set.filter(pk=admin.pk).exists()


def test_an_establishment_administrator_grants_a_scoped_role_to_their_professional(world):
    admin = tours_administration(world)
    url = reverse("administration-professional-role", args=[world.tours.pk, world.surgeon.pk])
    response = client_for(admin).post(url, {"role": "billing", "operation": "grant"}, follow=True)
    assert "Rousseau" in " ".join(_messages(response))
    surgeon = User.objects.get(pk=world.surgeon.user.pk)
    assert surgeon.has_perm("expertise.export_acts")
    event = (
        _events(event_id=SECURITY, event_type=AuditEventType.SECURITY_ROLES_CHANGED)
        .order_by("pk")
        .last()
    )
    assert (event.actor, event.object_id, event.detail["role"]) == (
        admin,
        str(surgeon.pk),
        "billing",
    )
    # Granting twice: told so, nothing written.
    client = client_for(admin)
    events = AuditEvent.objects.count()
    again = client.post(url, {"role": "billing", "operation": "grant"}, follow=True)
    assert "already" in " ".join(_messages(again)) or "déjà" in " ".join(_messages(again))
    assert AuditEvent.objects.count() == events
    # And revoked.
    client_for(admin).post(url, {"role": "billing", "operation": "revoke"})
    assert not User.objects.get(pk=surgeon.pk).has_perm("expertise.export_acts")


def test_an_establishment_administrator_grants_no_regional_role(world):
    admin = tours_administration(world)
    url = reverse("administration-professional-role", args=[world.tours.pk, world.surgeon.pk])
    client_for(admin).post(url, {"role": "data_protection", "operation": "grant"})
    assert not User.objects.get(pk=world.surgeon.user.pk).has_perm("portal.view_auditevent")
    # Nor through the service, whoever calls it: refused and audited.
    refusals = AuditEvent.objects.filter(event_id=SECURITY, outcome=AuditOutcome.MINOR_FAILURE)
    before = refusals.count()
    with pytest.raises(PermissionDenied):
        administration.role_grant(
            role_code=roles.REGIONAL_ADMIN, holder=world.surgeon.user, by=Actor(user=admin)
        )
    assert refusals.count() == before + 1


def test_an_establishment_administrator_grants_nothing_to_another_establishments_doctor(world):
    admin = tours_administration(world)
    # The Bourges radiologist, through the Tours page: not one of its professionals.
    url = reverse("administration-professional-role", args=[world.tours.pk, world.outsider.pk])
    assert client_for(admin).post(url, {"role": "billing"}).status_code == 404
    with pytest.raises(PermissionDenied):
        administration.role_grant(
            role_code="establishment_admin", holder=world.outsider.user, by=Actor(user=admin)
        )
    assert not User.objects.get(pk=world.outsider.user.pk).groups.exists()
    # Nor does the Bourges administrator act in Tours.
    other = bourges_administration(world)
    with pytest.raises(PermissionDenied):
        administration.role_grant(
            role_code="billing", holder=world.surgeon.user, by=Actor(user=other)
        )


def test_the_regional_administrator_grants_a_role_from_the_directory(world):
    admin = regional_administrator(world)
    person = _directory_person("9970055504", "Paul", "Dorval")
    url = reverse("administration-roles")
    page = client_for(admin).get(url, {"role": "programme", "q": "dorval"})
    assert [p.rpps for p in page.context["lookup"].persons] == [person.rpps]
    assert page.context["lookup"].extra_post == [("role", "programme")]
    client_for(admin).post(url, {"national_id": person.national_id, "role": "programme"})
    holder = Professional.objects.get(rpps=person.rpps).user
    assert holder.has_perm("rcp.view_indicators") and holder.has_perm("expertise.view_indicators")
    listed = client_for(admin).get(url)
    assert "Dorval".upper() in _page_text(listed).upper()


def test_the_regional_administrator_grants_and_revokes_a_role_by_email(world):
    admin = regional_administrator(world)
    url = reverse("administration-roles")
    client_for(admin).post(url, {"email": "DPO@mirc.test", "role": "data_protection"})
    dpo = User.objects.get(pk=world.auditor_user.pk)
    assert dpo.groups.filter(name="role:data_protection").exists()
    response = client_for(admin).post(
        url, {"email": "personne@mirc.test", "role": "data_protection"}, follow=True
    )
    assert _messages(response)
    revoke = reverse("administration-role-revoke", args=["data_protection", dpo.pk])
    assert client_for(admin).post(revoke).status_code == 302
    assert not dpo.groups.filter(name="role:data_protection").exists()
    # Revoking again: told it is done, nothing written.
    client = client_for(admin)
    events = AuditEvent.objects.count()
    again = client.post(revoke, follow=True)
    assert _messages(again)
    assert AuditEvent.objects.count() == events
    changes = _events(event_type=AuditEventType.SECURITY_ROLES_CHANGED, actor=admin)
    assert [e.detail["granted"] for e in changes.order_by("pk")] == [True, False]


def test_an_unknown_role_is_refused(world):
    admin = regional_administrator(world)
    response = client_for(admin).post(
        reverse("administration-roles"),
        {"email": "dpo@mirc.test", "role": "superuser"},
        follow=True,
    )
    assert _messages(response)
    assert not User.objects.get(pk=world.auditor_user.pk).groups.exists()


# --- Query counts ----------------------------------------------------------------------------


def _more_professionals(world, count: int, start: int) -> None:
    for n in range(start, start + count):
        professional = builders.professional(
            email=f"medecin{n}@mirc.test",
            first_name="Jean",
            last_name=f"Médecin{n}",
            establishment=world.tours,
        )
        administration.role_grant_by_system(
            role_code="billing", holder=professional.user, by=builders.SYSTEM
        )


@pytest.mark.parametrize(
    "name, user, kwargs",
    [
        ("administration-home", regional_administrator, lambda w: {}),
        ("administration-roles", regional_administrator, lambda w: {}),
        (
            "administration-professionals",
            tours_administration,
            lambda w: {"establishment_id": w.tours.pk},
        ),
    ],
)
def test_list_pages_make_a_constant_number_of_queries(
    world, name, user, kwargs, django_assert_max_num_queries
):
    client = client_for(user(world))
    url = reverse(name, kwargs=kwargs(world))
    _more_professionals(world, 2, 0)
    client.get(url)  # warm the session and the caches
    with django_assert_max_num_queries(40) as few:
        client.get(url)
    _more_professionals(world, 6, 10)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


# --- The demo's people keep their abilities, through the roles --------------------------------


def test_the_demo_grants_its_people_their_roles(db):
    from demo.seed import _establishments, _professionals
    from imaging.permissions import activity_establishments

    people = _professionals(_establishments())
    _professionals(_establishments())  # a second run changes nothing

    def user(key):
        return User.objects.get(pk=people[key].user.pk)

    perrin, haddad = user("j.perrin"), user("k.haddad")
    assert permissions.is_regional_administrator(perrin)
    assert perrin.has_perm("rcp.add_committee") and perrin.has_perm("expertise.add_pool")
    assert [e.name for e in permissions.administered_establishments(haddad)] == ["CHR d'Orléans"]
    assert [e.name for e in activity_establishments(haddad)] == ["CHR d'Orléans"]
    assert user("n.simon").has_perm("portal.view_auditevent")
    assert user("m.robin").has_perm("portal.change_identityconflict")
    assert not user("c.martin").groups.exists()
    assert Group.objects.get(name="role:regional_admin").user_set.count() == 1


def test_a_dicom_declaration_saved_on_stale_values_is_refused(world):
    admin = regional_administrator(world)
    url = reverse("administration-dicom", args=[world.tours.pk])
    read_by_both = _declaration_post(world)
    assert client_for(admin).post(url, read_by_both).status_code == 302
    response = client_for(admin).post(
        url, {**read_by_both, "pacs_host": "autre.chru-tours.test"}, follow=True
    )
    assert response.status_code == 200 and _messages(response)
    assert DicomDeclaration.objects.get(establishment=world.tours).pacs_host == (
        "pacs.chru-tours.test"
    )


def test_removing_a_primary_affiliation_makes_the_next_one_primary(world):
    admin = tours_administration(world)
    Affiliation.objects.create(professional=world.surgeon, establishment=world.bourges)
    tours = world.surgeon.affiliations.get(establishment=world.tours)
    assert tours.is_primary
    client_for(admin).post(
        reverse("administration-affiliation-end", args=[world.tours.pk, tours.pk])
    )
    assert list(world.surgeon.affiliations.values_list("establishment", "is_primary")) == [
        (world.bourges.pk, True)
    ]
