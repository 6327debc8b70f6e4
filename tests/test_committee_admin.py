"""Committees set up by the regional administration and run by their coordinators: a committee
created with a first coordinator found in the national directory, members added from the
directory (an account is made for a doctor who has none), roles, removals and the specialties
the quorum requires; each change audited, outsiders and plain members refused like a missing id.
"""

import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.audit import Actor
from portal.directory_models import DirectoryActivity, DirectoryIdType, DirectoryPerson
from portal.identifiers import luhn_complete
from portal.models import AuditEvent, AuditEventId, AuditEventType, Professional, Specialty, User
from rcp import committees
from rcp.errors import NotAllowed
from rcp.models import Committee, CommitteeMember
from rcp.quorum import required_specialties
from tests import builders
from tests.conftest import client_for
from tests.rcp_world import rcp_world
from tests.test_demo_browser import browser, demo_server  # noqa: F401

Role = CommitteeMember.Role


def directory_doctor(
    *, last_name, first_name, specialty="", specialty_label="", finess="", number=1
) -> DirectoryPerson:
    """A physician of the national directory's extract (as the import stores them), practising
    at ``finess``; no account in the portal."""
    rpps = luhn_complete(f"9980000{number:03d}")
    person = DirectoryPerson.objects.create(
        national_id=DirectoryIdType.RPPS + rpps,
        id_type=DirectoryIdType.RPPS,
        rpps=rpps,
        civility="Docteur",
        last_name=last_name.upper(),
        first_name=first_name.upper(),
        profession_code="10",
        profession_label="Médecin",
        specialty=specialty,
        specialty_label=specialty_label,
    )
    if finess:
        DirectoryActivity.objects.create(
            person=person, fingerprint=f"site-{number}", finess_site=finess, name="Site"
        )
    return person


def messages_of(response) -> list[str]:
    """The confirmation and error lines base.html shows, as the user reads them (in French,
    the portal's first language)."""
    page = response.content.decode()
    found = re.findall(r'<li class="message[^"]*">(.*?)</li>', page, re.S)
    found += re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', page, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", m)).strip() for m in found]


@pytest.fixture
def region(world):
    """The thoracic board of Tours (tests/rcp_world.py), the regional administrator, and two
    doctors of the directory who have no account yet: a radiation oncologist of Bourges and a
    pathologist of Tours."""
    rcp_world(world)
    world.regional_admin = builders.user(
        email="administration.regionale@mirc.test",
        first_name="Mathieu",
        last_name="Leroy",
        permissions=["rcp.add_committee", "expertise.add_pool"],
    )
    world.girard = directory_doctor(
        last_name="Girard",
        first_name="Camille",
        specialty=Specialty.RADIOTHERAPY,
        specialty_label="Oncologie radiothérapique",
        finess=world.bourges.finess,
        number=1,
    )
    world.blanc = directory_doctor(
        last_name="Blanc",
        first_name="Hugo",
        specialty=Specialty.PATHOLOGY,
        specialty_label="Anatomie et cytologie pathologiques",
        finess=world.tours.finess,
        number=2,
    )
    return world


def _members_url(committee) -> str:
    return reverse("rcp-committee-members", args=[committee.pk])


def _roles(committee) -> dict[str, str]:
    return {
        str(m.professional): m.role
        for m in committee.memberships.select_related("professional__user")
    }


def _events(**filters):
    return AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT, **filters)


# --- Creating a committee -----------------------------------------------------------------------


def test_the_regional_administration_creates_a_committee_coordinated_by_a_directory_doctor(region):
    client = client_for(region.regional_admin)
    create = reverse("rcp-committee-create")
    home = client.get(reverse("rcp-home")).content.decode()
    assert create in home

    found = client.get(create, {"q": "gira"}).content.decode()
    assert "Camille" in found and region.girard.rpps in found
    chosen = client.post(create + "?q=gira", {"national_id": region.girard.national_id})
    assert "Camille" in chosen.content.decode()
    assert not User.objects.filter(professional__rpps=region.girard.rpps).exists()

    response = client.post(
        create,
        {
            "step": "create",
            "national_id": region.girard.national_id,
            "name": "RCP d'urologie du Cher",
            "kind": Committee.Kind.ORGAN,
            "establishment": region.bourges.pk,
            "required_specialties": [Specialty.UROLOGY, Specialty.RADIOTHERAPY],
            "place": "Salle du staff, CH de Bourges",
            "video_url": "https://visio.example.test/uro",
        },
    )
    committee = Committee.objects.get(name="RCP d'urologie du Cher")
    # Back to the RCP home (the members' page is its coordinators'), with what was done.
    assert response.status_code == 302
    assert response["Location"] == reverse("rcp-home")
    girard = Professional.objects.select_related("user").get(rpps=region.girard.rpps)
    assert _roles(committee) == {str(girard): Role.COORDINATOR}
    assert committee.required_specialties == [Specialty.UROLOGY, Specialty.RADIOTHERAPY]
    assert committee.establishment == region.bourges
    # The account made from the directory, affiliated where the directory says he practises.
    assert list(girard.affiliations.values_list("establishment", flat=True)) == [region.bourges.pk]
    created = _events(object_type="rcp.committee", object_id=str(committee.pk)).get()
    assert created.actor == region.regional_admin
    assert created.event_type == AuditEventType.SOFTWARE_CONFIGURATION
    assert _events(object_type="portal.professional", object_id=str(girard.pk)).count() == 1
    # The new coordinator runs it from now on.
    assert client_for(girard.user).get(_members_url(committee)).status_code == 200


def test_only_the_regional_administration_creates_committees(region):
    before = Committee.objects.count()
    for user in (region.coordinator.user, region.oncologist.user):
        client = client_for(user)
        assert client.get(reverse("rcp-committee-create")).status_code == 403
        response = client.post(
            reverse("rcp-committee-create"),
            {
                "step": "create",
                "national_id": region.girard.national_id,
                "name": "X",
                "kind": "organ",
            },
        )
        assert response.status_code == 403
        assert "committee-create" not in client.get(reverse("rcp-home")).content.decode()
    assert Committee.objects.count() == before
    assert not Professional.objects.filter(rpps=region.girard.rpps).exists()
    with pytest.raises(NotAllowed):
        committees.committee_create_with_coordinator(
            name="X",
            kind="organ",
            coordinator=region.surgeon,
            by=Actor(user=region.coordinator.user),
        )


def test_a_bad_creation_changes_nothing_and_says_why(region):
    client = client_for(region.regional_admin)
    committees_before, users_before = Committee.objects.count(), User.objects.count()
    unknown = client.post(
        reverse("rcp-committee-create"), {"national_id": "899999999999"}, follow=True
    )
    assert any("pas celui d'un professionnel actif" in m for m in messages_of(unknown))
    # No name: the form says so, and the chosen doctor gets no account for nothing.
    nameless = client.post(
        reverse("rcp-committee-create"),
        {"step": "create", "national_id": region.girard.national_id, "name": "", "kind": "organ"},
    )
    assert nameless.status_code == 200
    assert "Camille" in nameless.content.decode()
    assert messages_of(nameless)
    assert (Committee.objects.count(), User.objects.count()) == (committees_before, users_before)


# --- Who manages a committee ---------------------------------------------------------------------


def test_the_members_page_is_its_chair_and_coordinators_only(region):
    thoracic = _members_url(region.thoracic)
    assert client_for(region.coordinator.user).get(thoracic).status_code == 200
    assert client_for(region.oncologist.user).get(thoracic).status_code == 200  # the chair
    # A plain member, the chair of another committee, the technical administrator: 404.
    for user in (region.surgeon.user, region.outsider.user, region.admin_user):
        assert client_for(user).get(thoracic).status_code == 404, user
    # The coordinator of the thoracic board sees nothing of the digestive board's.
    assert (
        client_for(region.coordinator.user).get(_members_url(region.digestive)).status_code == 404
    )
    refusals = AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, object_type="rcp.committee", outcome=4
    )
    assert refusals.count() == 4
    # A plain member cannot change anything either, even with a crafted form.
    surgeon_member = region.thoracic.memberships.get(professional=region.surgeon)
    response = client_for(region.surgeon.user).post(
        reverse("rcp-committee-member-role", args=[region.thoracic.pk, surgeon_member.pk]),
        {"role": Role.CHAIR, "seen_role": Role.MEMBER},
    )
    assert response.status_code == 404
    assert _roles(region.thoracic)[str(region.surgeon)] == Role.MEMBER
    # A member of another committee cannot be reached through this committee's address.
    digestive_member = region.digestive.memberships.get()
    response = client_for(region.coordinator.user).post(
        reverse("rcp-committee-member-remove", args=[region.thoracic.pk, digestive_member.pk])
    )
    assert response.status_code == 404
    assert CommitteeMember.objects.filter(pk=digestive_member.pk).exists()


# --- Members from the directory ------------------------------------------------------------------


def test_a_coordinator_adds_a_doctor_of_another_establishment_who_has_no_account(region):
    client = client_for(region.coordinator.user)
    page = client.get(_members_url(region.thoracic), {"q": "Girard"}).content.decode()
    assert "Ajouter comme membre" in page
    response = client.post(
        _members_url(region.thoracic) + "?q=Girard",
        {"national_id": region.girard.national_id},
        follow=True,
    )
    girard = Professional.objects.get(rpps=region.girard.rpps)
    assert _roles(region.thoracic)[str(girard)] == Role.MEMBER
    assert any("a rejoint le comité" in m for m in messages_of(response))
    assert str(girard) in response.content.decode()
    added = _events(
        object_type="rcp.committee",
        object_id=str(region.thoracic.pk),
        event_type=AuditEventType.SECURITY_ROLES_CHANGED,
    ).get()
    assert added.actor == region.coordinator.user
    assert added.detail["professional"] == girard.pk
    # A member now: the committee's page opens for him.
    assert (
        client_for(girard.user).get(reverse("rcp-committee", args=[region.thoracic.pk])).status_code
        == 200
    )


def test_adding_twice_or_an_unknown_identifier_changes_nothing(region):
    client = client_for(region.coordinator.user)
    client.post(_members_url(region.thoracic), {"national_id": region.girard.national_id})
    before = (CommitteeMember.objects.count(), User.objects.count(), AuditEvent.objects.count())
    twice = client.post(
        _members_url(region.thoracic), {"national_id": region.girard.national_id}, follow=True
    )
    assert any("déjà membre de ce comité" in m for m in messages_of(twice))
    unknown = client.post(
        _members_url(region.thoracic), {"national_id": "81234567890"}, follow=True
    )
    assert any("annuaire" in m for m in messages_of(unknown))
    assert (
        CommitteeMember.objects.count(),
        User.objects.count(),
        AuditEvent.objects.count(),
    ) == before


# --- Roles ----------------------------------------------------------------------------------------


def _member(committee, professional) -> CommitteeMember:
    return committee.memberships.get(professional=professional)


def _set_role(client, committee, professional, role, seen=None):
    member = _member(committee, professional)
    return client.post(
        reverse("rcp-committee-member-role", args=[committee.pk, member.pk]),
        {"role": role, "seen_role": seen or member.role},
        follow=True,
    )


def test_naming_a_new_chair_hands_the_chair_over(region):
    client = client_for(region.coordinator.user)
    _set_role(client, region.thoracic, region.surgeon, Role.CHAIR)
    roles = _roles(region.thoracic)
    assert roles[str(region.surgeon)] == Role.CHAIR
    assert roles[str(region.oncologist)] == Role.COORDINATOR  # the former chair stays on
    assert list(roles.values()).count(Role.CHAIR) == 1
    changed = _events(event_type=AuditEventType.SECURITY_ROLES_CHANGED).get()
    assert changed.detail["former_chair"] == region.oncologist.pk


def test_the_last_coordinator_can_neither_leave_nor_step_down(region):
    client = client_for(region.coordinator.user)
    oncologist = _member(region.thoracic, region.oncologist)
    client.post(
        reverse("rcp-committee-member-remove", args=[region.thoracic.pk, oncologist.pk]),
        {"seen_role": Role.CHAIR},
    )
    assert str(region.oncologist) not in _roles(region.thoracic)
    before = (_roles(region.thoracic), AuditEvent.objects.count())
    step_down = _set_role(client, region.thoracic, region.coordinator, Role.MEMBER)
    assert any("dernier président ou coordinateur" in m for m in messages_of(step_down))
    me = _member(region.thoracic, region.coordinator)
    leave = client.post(
        reverse("rcp-committee-member-remove", args=[region.thoracic.pk, me.pk]),
        {"seen_role": me.role},
        follow=True,
    )
    assert any("dernier président ou coordinateur" in m for m in messages_of(leave))
    assert (_roles(region.thoracic), AuditEvent.objects.count()) == before


def test_a_change_made_meanwhile_by_another_coordinator_is_not_overridden(region):
    # The chair made the surgeon a coordinator; the coordinator's page still showed "member".
    committees.member_set_role(
        committee=region.thoracic,
        member=_member(region.thoracic, region.surgeon),
        role=Role.COORDINATOR,
        by=Actor(user=region.oncologist.user),
    )
    response = _set_role(
        client_for(region.coordinator.user),
        region.thoracic,
        region.surgeon,
        Role.MEMBER,
        seen=Role.MEMBER,
    )
    assert any("entre-temps" in m for m in messages_of(response))
    assert _roles(region.thoracic)[str(region.surgeon)] == Role.COORDINATOR


# --- Required specialties -------------------------------------------------------------------------


def test_a_coordinator_sets_the_specialties_the_quorum_requires(region):
    client = client_for(region.coordinator.user)
    seen = ",".join(region.thoracic.required_specialties)
    url = reverse("rcp-committee-specialties", args=[region.thoracic.pk])
    wanted = [Specialty.THORACIC_SURGERY, Specialty.MEDICAL_ONCOLOGY, Specialty.PATHOLOGY]
    client.post(url, {"specialties": wanted, "seen": seen})
    region.thoracic.refresh_from_db()
    assert set(required_specialties(region.thoracic)) == set(wanted)
    assert _events(event_type=AuditEventType.SOFTWARE_CONFIGURATION).get().detail[
        "before"
    ] == seen.split(",")
    # An unknown specialty, or a page built on the old list: refused, unchanged.
    before = list(region.thoracic.required_specialties)
    bad = client.post(url, {"specialties": ["astrologie"], "seen": ",".join(before)}, follow=True)
    assert messages_of(bad)
    stale = client.post(url, {"specialties": [Specialty.UROLOGY], "seen": seen}, follow=True)
    assert any("entre-temps" in m for m in messages_of(stale))
    region.thoracic.refresh_from_db()
    assert region.thoracic.required_specialties == before


def test_a_cpdpn_keeps_its_four_core_specialties(region):
    cpdpn = builders.committee(
        name="CPDPN du Centre",
        establishment=region.tours,
        kind=Committee.Kind.CPDPN,
        members=[(region.oncologist, Role.COORDINATOR)],
    )
    client = client_for(region.oncologist.user)
    page = client.get(_members_url(cpdpn)).content.decode()
    assert 'data-testid="cpdpn-specialties"' in page
    assert 'data-testid="specialties-form"' not in page
    response = client.post(
        reverse("rcp-committee-specialties", args=[cpdpn.pk]),
        {"specialties": [Specialty.UROLOGY], "seen": ""},
        follow=True,
    )
    assert any("CSP R2131-12" in m for m in messages_of(response))
    cpdpn.refresh_from_db()
    assert cpdpn.required_specialties == []


# --- Cost ---------------------------------------------------------------------------------------


def test_the_members_page_costs_the_same_queries_for_4_or_24_members(region):
    client = client_for(region.coordinator.user)
    url = _members_url(region.thoracic)
    client.get(url, {"q": "Gir"})
    with CaptureQueriesContext(connection) as few:
        assert client.get(url, {"q": "Gir"}).status_code == 200
    for n in range(20):
        doctor = builders.professional(
            email=f"membre{n}@mirc.test",
            first_name="Membre",
            last_name=f"N{n}",
            specialty=Specialty.PULMONOLOGY,
            establishment=region.tours if n % 2 else region.bourges,
        )
        committees.member_add(
            committee=region.thoracic, professional=doctor, by=Actor(user=region.coordinator.user)
        )
    with CaptureQueriesContext(connection) as many:
        page = client.get(url, {"q": "Gir"}).content.decode()
    assert page.count('name="seen_role"') == 2 * 24
    assert len(many) == len(few)


# --- In the browser -------------------------------------------------------------------------------


# The shell script that prepares the demo: two physicians of the directory with names the test
# can type, Dr Martin (the demo's oncologist, already a portal user) and Dr Girard (no account).
# The demo's coordinator creates committees through her regional administrator role.
_DEMO_DIRECTORY = """
from portal.directory_models import DirectoryActivity, DirectoryPerson
from portal.models import Establishment, Professional
martin = Professional.objects.get(user__email='c.martin@mirc.test')
finess = Establishment.objects.order_by('pk').values_list('finess', flat=True).first()
for rpps, first, last, specialty in [
    (martin.rpps, 'CLAIRE', 'MARTIN', 'oncologie_medicale'),
    ('99800000999', 'CAMILLE', 'GIRARD', 'radiotherapie'),
]:
    person, _ = DirectoryPerson.objects.update_or_create(
        national_id='8' + rpps,
        defaults=dict(id_type='8', rpps=rpps, civility='Docteur', first_name=first,
        last_name=last, profession_code='10', profession_label='Médecin', specialty=specialty,
        is_active=True),
    )
    DirectoryActivity.objects.get_or_create(
        person=person, fingerprint='demo', defaults={'finess_site': finess}
    )
print('ok')
"""


@pytest.mark.service("chromium")
def test_a_committee_created_in_the_browser_with_members_from_the_directory(
    demo_server,  # noqa: F811
    browser,  # noqa: F811
):
    from tests.test_demo_browser import ARTIFACTS, _sign_in
    from tests.waiting import on_page, wait_until

    base, manage = demo_server
    assert manage("shell", "-c", _DEMO_DIRECTORY).stdout.strip().endswith("ok")

    def signed_in(email):
        context = browser.new_context(locale="fr-FR", viewport={"width": 1400, "height": 1200})
        page = context.new_page()
        _sign_in(page, base, email)
        page.wait_for_url(f"{base}/")
        return context, page

    # The regional administration creates the committee, Dr Martin as its first coordinator.
    context, perrin = signed_in("j.perrin@mirc.test")
    perrin.goto(f"{base}/rcp/")
    perrin.click("[data-testid=committee-create]")
    perrin.fill("input[name=q]", "martin claire")
    perrin.click("section.directory-lookup form[role=search] button")
    perrin.click("[data-testid=directory-results] button:has-text('Choisir comme coordinateur')")
    assert "MARTIN" in perrin.inner_text("[data-testid=chosen-coordinator]")
    perrin.fill("input[name=name]", "RCP de radiothérapie du Centre")
    perrin.select_option("select[name=kind]", "cross_cutting")
    perrin.click("[data-testid=committee-form] button[type=submit]")
    wait_until(
        lambda: perrin.url == f"{base}/rcp/",
        timeout=15,
        what="the RCP home after creation",
        sleep=on_page(perrin),
    )
    assert "RCP de radiothérapie du Centre" in perrin.inner_text(".messages")
    context.close()

    # Dr Martin finds the committee and adds Dr Girard, who has no account yet.
    context, martin = signed_in("c.martin@mirc.test")
    martin.goto(f"{base}/rcp/")
    martin.click("text=RCP de radiothérapie du Centre")
    martin.click("[data-testid=manage-members]")
    martin.fill("input[name=q]", "girard")
    martin.click("section.directory-lookup form[role=search] button")
    martin.click("[data-testid=directory-results] button:has-text('Ajouter comme membre')")
    wait_until(
        lambda: "GIRARD" in martin.inner_text("[data-testid=members]"),
        timeout=15,
        what="Dr Girard in the members",
        sleep=on_page(martin),
    )
    assert "a rejoint le comité" in martin.inner_text(".messages")
    ARTIFACTS.mkdir(exist_ok=True)
    martin.screenshot(path=str(ARTIFACTS / "rcp-committee-members.png"), full_page=True)
    context.close()
