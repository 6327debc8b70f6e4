"""The builders every test world is made of: establishments, professionals, patients and
their care team, CT studies, RCP committees, sessions and cases, expertise pools and requests.

The personas (tests/conftest.py ``world``), the RCP around them (tests/rcp_world.py), the
tele-expertise around them (tests/expertise_world.py) and the permission matrix's objects
(tests/permission_matrix.py) are all built from here, so a change of how a professional or a
case comes to exist is made once.

Rows with no rule of their own (an establishment, a user, a professional, a pool and its
members) come from factory-boy factories, so a test names only the fields it is about. What
the portal creates through a service (a patient and its INS, a care relationship, a committee,
a case, a request, an ingested study) is built by calling that service, so the test world goes
through the same checks, audit and timeline as a user's action.
"""

import datetime as dt
import itertools

import factory
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from factory.django import DjangoModelFactory

from portal import services as portal_services
from portal.audit import Actor
from portal.identifiers import ins_key, luhn_complete
from portal.models import (
    Affiliation,
    Establishment,
    IdentityStatus,
    InsOid,
    Professional,
    User,
)

PASSWORD = "correct-horse-battery-staple"
SYSTEM = Actor.system("tests")


def _permissions(labels):
    """Permission rows for "app_label.codename" (or a bare codename when it is unique)."""
    found = []
    for label in labels:
        app_label, _, codename = label.rpartition(".")
        rows = Permission.objects.filter(codename=codename)
        if app_label:
            rows = rows.filter(content_type__app_label=app_label)
        found.append(rows.get())
    return found


# --- Rows without rules of their own: factory-boy -----------------------------------------------


class EstablishmentFactory(DjangoModelFactory):
    class Meta:
        model = Establishment

    name = factory.Sequence(lambda n: f"Établissement {n}")
    # FINESS numbers are nine digits with a Luhn key (portal.identifiers.validate_finess).
    finess = factory.Sequence(lambda n: luhn_complete(f"99{n:06d}"))
    city = "Tours"
    kind = "ch"


class UserFactory(DjangoModelFactory):
    """A user who can sign in with PASSWORD; ``permissions`` are "app_label.codename"."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@mirc.test")
    first_name = "Camille"
    last_name = factory.Sequence(lambda n: f"Test{n}")

    @classmethod
    def _create(cls, model_class, *args, superuser=False, **kwargs):
        manager = cls._get_manager(model_class)
        email = kwargs.pop("email")
        if superuser:
            return manager.create_superuser(email, PASSWORD, **kwargs)
        return manager.create_user(email, PASSWORD, **kwargs)

    @factory.post_generation
    def permissions(user, create, extracted, **kwargs):
        if create and extracted:
            user.user_permissions.add(*_permissions(extracted))


_rpps_numbers = itertools.count(1)


class ProfessionalFactory(DjangoModelFactory):
    """A professional with an RPPS number in the test range (99700…), affiliated (as primary)
    to ``establishment`` when one is given."""

    class Meta:
        model = Professional
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    title = "Dr"
    profession = "medecin"
    specialty = ""
    # Drawn only when the test gives none (a coordinator's None draws nothing): the printed
    # documents compared with fixed texts (tests/test_document_texts.py) carry these numbers.
    rpps = factory.LazyFunction(lambda: luhn_complete(f"9970{next(_rpps_numbers):06d}"))

    @factory.post_generation
    def establishment(professional, create, extracted, **kwargs):
        if create and extracted is not None:
            Affiliation.objects.create(
                professional=professional, establishment=extracted, is_primary=True
            )


def establishment(**fields) -> Establishment:
    return EstablishmentFactory(**fields)


def user(*, email, first_name="", last_name="", permissions=(), superuser=False) -> User:
    return UserFactory(
        email=email,
        first_name=first_name,
        last_name=last_name,
        permissions=list(permissions),
        superuser=superuser,
    )


def professional(
    *,
    email,
    first_name,
    last_name,
    specialty="",
    profession="medecin",
    establishment=None,
    title="Dr",
    with_rpps=True,
    permissions=(),
) -> Professional:
    """A professional who signs in as ``email``; no RPPS for a coordinator or an officer."""
    fields = {} if with_rpps else {"rpps": None}
    return ProfessionalFactory(
        user__email=email,
        user__first_name=first_name,
        user__last_name=last_name,
        user__permissions=list(permissions),
        specialty=specialty,
        profession=profession,
        title=title,
        establishment=establishment,
        **fields,
    )


# --- Patients and their care team: through portal's services --------------------------------------


def patient(
    *,
    birth_name,
    first_names,
    sex="F",
    birth_date=dt.date(1956, 3, 12),
    place="37261",
    order=1,
    qualified=True,
    establishment=None,
    ipp="",
):
    """A patient registered with a test INS (NIR_TEST) computed from their traits, under
    ``ipp`` at ``establishment`` when given."""
    first13 = f"{2 if sex == 'F' else 1}{birth_date:%y%m}{place}{order:03d}"
    result = portal_services.patient_register(
        traits=portal_services.PatientTraits(
            birth_name=birth_name,
            first_names=first_names,
            sex=sex,
            birth_date=birth_date,
            birth_place_code=place,
        ),
        ins_matricule=first13 + ins_key(first13),
        ins_oid=InsOid.NIR_TEST,
        identity_status=IdentityStatus.QUALIFIED if qualified else IdentityStatus.RETRIEVED,
        establishment=establishment,
        ipp=ipp,
        by=SYSTEM,
    )
    return result.patient


def care_team(patient, *members):
    """``members`` are (professional, CareRole) pairs joining ``patient``'s care team."""
    return [
        portal_services.care_relationship_add(
            patient=patient, professional=professional, role=role, by=SYSTEM
        )
        for professional, role in members
    ]


# --- Imaging ---------------------------------------------------------------------------------


def ct_study(patient, *, by, key: str, slices: int = 2) -> dict:
    """A CT of ``patient`` uploaded by ``by`` (a user) and ingested into the archive and the
    index; its study, and the UIDs of the study, its series and its first instance."""
    from imaging import services as imaging_services
    from imaging.models import Instance, Study
    from tests.dicom_factory import ct_files, uid

    batch = imaging_services.ingest_batch_create(
        patient=patient,
        files=[
            SimpleUploadedFile(f"{n}.dcm", data)
            for n, data in enumerate(ct_files(patient, key=key, slices=slices))
        ],
        by=Actor(user=by),
    )
    imaging_services.ingest_run(batch=batch)
    study = Study.objects.get(study_instance_uid=uid(key, "study"))
    instance = Instance.objects.filter(series__study=study).order_by("instance_number").first()
    return {
        "study_uid": study.study_instance_uid,
        "series_uid": instance.series.series_instance_uid,
        "sop_uid": instance.sop_instance_uid,
        "study": study,
    }


# --- RCP: through rcp's services ------------------------------------------------------------------


def committee(*, name, establishment, members, kind=None, required_specialties=()):
    """A committee of ``establishment``; ``members`` are (professional, CommitteeMember.Role)."""
    from rcp import services as rcp_services
    from rcp.models import Committee

    return rcp_services.committee_create(
        by=Actor.system("tests"),
        name=name,
        kind=kind or Committee.Kind.ORGAN,
        establishment=establishment,
        required_specialties=list(required_specialties),
        members=list(members),
    )


def sessions(committee, *, count=1, in_days=3, hours=2, every="weekly"):
    """``count`` sessions of ``committee``, the first ``in_days`` from now."""
    from rcp import services as rcp_services

    start = timezone.now().replace(microsecond=0) + dt.timedelta(days=in_days)
    return rcp_services.sessions_schedule(
        by=Actor.system("tests"),
        committee=committee,
        first_start=start,
        duration=dt.timedelta(hours=hours),
        every=every,
        count=count,
    )


def case(*, patient, committee, by, studies=(), submit=False, **fields):
    """A case of ``patient`` for ``committee`` written by ``by`` (a user) with ``fields``
    and ``studies``; submitted when ``submit``."""
    from rcp import services as rcp_services

    actor = Actor(user=by)
    made = rcp_services.case_create(patient=patient, committee=committee, by=actor)
    made = rcp_services.case_update(
        case=made, revision=made.revision, by=actor, studies=list(studies), **fields
    )
    return rcp_services.case_submit(case=made, by=actor) if submit else made


# --- Tele-expertise -----------------------------------------------------------------------------


class PoolFactory(DjangoModelFactory):
    class Meta:
        model = "expertise.Pool"

    name = factory.Sequence(lambda n: f"Pool {n}")
    specialty = "radiologie"
    establishment = factory.SubFactory(EstablishmentFactory)


class PoolMemberFactory(DjangoModelFactory):
    class Meta:
        model = "expertise.PoolMember"

    pool = factory.SubFactory(PoolFactory)
    professional = factory.SubFactory(ProfessionalFactory)
    role = "expert"


def pool(*, name, specialty, establishment, members=()):
    """A pool of ``establishment``; ``members`` are (professional, PoolMember.Role)."""
    made = PoolFactory(name=name, specialty=specialty, establishment=establishment)
    for member, role in members:
        PoolMemberFactory(pool=made, professional=member, role=role)
    return made


def request(*, patient, pool, by, studies=(), send=False, **fields):
    """A request of ``by`` (a user) for ``patient`` to ``pool``; sent when ``send``."""
    from expertise import services as expertise_services

    actor = Actor(user=by)
    made = expertise_services.request_create(
        patient=patient, pool=pool, by=actor, studies=list(studies), **fields
    )
    return expertise_services.request_send(request=made, by=actor) if send else made
