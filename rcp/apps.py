from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RcpConfig(AppConfig):
    name = "rcp"
    verbose_name = _("Multidisciplinary meetings")

    def ready(self):
        # Its part of the home page (portal.home: portal cannot import this app).
        from rcp import home

        home.register()
        # How the audit trail names its objects (portal.audit_labels).
        from rcp import audit_labels

        audit_labels.register_labels()

    def portal_roles(self):
        """What this app adds to the roles of portal.roles (granted from the administration
        pages): the regional programme reads every committee's indicators; the regional
        administrator creates committees."""
        return {"programme": ["rcp.view_indicators"], "regional_admin": ["rcp.add_committee"]}

    def portal_role_details(self):
        return {"programme": {"label": _("Regional programme"), "establishment_scoped": False}}

    def patient_panel(self, *, user, patient):
        """The patient's RCP cases that ``user`` may open, for the patient page (asked by
        portal.selectors.patient_panels, which must not import this app)."""
        from rcp.patient_panel import patient_panel

        return patient_panel(user=user, patient=patient)

    def shareable_documents(self, *, user, patient):
        """The fiches RCP (ready, of a validated decision) of the patient's cases that
        ``user`` may open, as (document, label), for a share with a doctor outside the portal
        (asked by imaging.shares, which must not import this app)."""
        from rcp.models import RcpDocument
        from rcp.selectors import cases_visible_to

        fiches = (
            RcpDocument.objects.filter(
                kind=RcpDocument.Kind.FICHE,
                status=RcpDocument.Status.READY,
                case__in=cases_visible_to(user).filter(patient=patient),
                decision__validated_at__isnull=False,
            )
            .select_related("case__committee", "decision")
            .order_by("-decision__validated_at")
        )
        return [
            (
                fiche,
                _("RCP form: %(committee)s, %(date)s")
                % {
                    "committee": fiche.case.committee.name,
                    "date": fiche.decision.validated_at.strftime("%d/%m/%Y"),
                },
            )
            for fiche in fiches
        ]

    def patient_reader_ids(self, *, patient):
        """Users who may hold a cached grant on the patient's studies through this app: the
        members of the committees the patient's cases went to (asked by portal.services when
        the patient's access changes, e.g. an opposition to sharing, so that their cached
        grants are forgotten at once)."""
        from rcp.models import CommitteeMember

        return CommitteeMember.objects.filter(
            committee__cases__patient=patient, professional__user__isnull=False
        ).values_list("professional__user_id", flat=True)

    def studies_shared_with(self, user):
        """The studies of the submitted cases of ``user``'s committees (asked by
        imaging.selectors, which must not import this app: the meeting reviews them)."""
        from rcp.selectors import studies_shared_with_committees

        return studies_shared_with_committees(user)

    def review_room_invites(self, *, room, user):
        """Whether ``user`` may join ``room`` when it is an RCP case's, else None (asked by
        imaging.review). The meeting's room is for those who work on the case, not for the
        patient's doctors who only read it (its GP)."""
        from rcp.models import Case
        from rcp.selectors import cases_acted_on_by

        case_id = Case.objects.filter(review_room=room).values_list("pk", flat=True).first()
        if case_id is None:
            return None
        return cases_acted_on_by(user).filter(pk=case_id).exists()

    def review_room_coordinates(self, *, room, user):
        """In an RCP case's room, the committee's chair and coordinators hand control over
        (asked by imaging.review); None for the other rooms."""
        from rcp.models import Case
        from rcp.selectors import is_coordinating

        case = Case.objects.filter(review_room=room).select_related("committee").first()
        if case is None:
            return None
        return is_coordinating(committee=case.committee, user=user)

    def merge_patient(self, *, source, target):
        """Two records of one person merged (portal.services.patient_merge, which must not
        import this app): the survivor takes the RCP cases."""
        from rcp.models import Case

        Case.objects.filter(patient=source).update(patient=target)

    def imaging_activity(self, *, starts_at, zone):
        """The programme's RCP figures since ``starts_at`` (asked by imaging.activity, which
        must not import this app), by the committee's establishment and the month the case
        was submitted: cases with studies, and with a study of another establishment."""
        from imaging.activity import studies_attached_figures
        from rcp.models import Case

        yield from studies_attached_figures(
            Case.objects.filter(submitted_at__gte=starts_at),
            owner="case",
            establishment="committee__establishment_id",
            moment="submitted_at",
            zone=zone,
            figures=("rcp_cases_with_studies", "rcp_cases_with_other_studies"),
        )
