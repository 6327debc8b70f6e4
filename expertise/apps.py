from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ExpertiseConfig(AppConfig):
    name = "expertise"
    verbose_name = _("Tele-expertise")

    def ready(self):
        # Its part of the home page (portal.home: portal cannot import this app).
        from expertise import home

        home.register()
        # How the audit trail names its objects (portal.audit_labels).
        from expertise import audit_labels

        audit_labels.register_labels()

    def portal_roles(self):
        """What this app adds to the roles of portal.roles: the regional programme reads every
        pool's indicators; the billing office exports the acts of its establishments (hence
        scoped: expertise.billing limits the export to the holder's affiliations); the
        regional administrator creates pools."""
        return {
            "programme": ["expertise.view_indicators"],
            "billing": ["expertise.export_acts"],
            "regional_admin": ["expertise.add_pool"],
        }

    def portal_role_details(self):
        return {
            "programme": {"label": _("Regional programme"), "establishment_scoped": False},
            "billing": {"label": _("Tele-expertise billing office"), "establishment_scoped": True},
        }

    def read_only_patient_grant(self, user):
        """The patients whose request ``user`` has claimed and not answered yet: the expert
        reads their imaging dossier, priors included, for the tele-expertise (asked by
        portal.access, which must not import this app)."""
        from expertise.selectors import patients_under_expertise_of
        from portal.models import AuditPurpose

        return AuditPurpose.EXPERTISE, patients_under_expertise_of(user)

    def read_only_patient_reasons(self, *, user, patient_id):
        """Why ``user`` reads the patient under the grant above: the claimed requests, each
        a way back from the priors' pages (asked by portal.access; imaging must not import
        this app)."""
        from django.urls import reverse

        from expertise.selectors import requests_under_expertise_of
        from portal.access import ReadOnlyReason

        return [
            ReadOnlyReason(
                label=_("Back to request no. %(number)s") % {"number": request.pk},
                url=reverse("expertise-request", args=[request.pk]),
            )
            for request in requests_under_expertise_of(user, patient_id=patient_id).only("pk")
        ]

    def patient_panel(self, *, user, patient):
        """The patient's tele-expertise requests that ``user`` may open, for the patient
        page (asked by portal.selectors.patient_panels, which must not import this app)."""
        from expertise.patient_panel import patient_panel

        return patient_panel(user=user, patient=patient)

    def shareable_documents(self, *, user, patient):
        """The signed reports (their ready PDF) of the patient's requests that ``user`` may
        open, as (document, label), for a share with a doctor outside the portal (asked by
        imaging.shares, which must not import this app)."""
        from expertise.models import ReportDocument
        from expertise.selectors import requests_visible_to

        documents = (
            ReportDocument.objects.filter(
                status=ReportDocument.Status.READY,
                report__signed_at__isnull=False,
                report__request__in=requests_visible_to(user).filter(patient=patient),
            )
            .select_related("report")
            .order_by("-report__signed_at")
        )
        return [
            (
                document,
                _("Tele-expertise report of %(date)s")
                % {"date": document.report.signed_at.strftime("%d/%m/%Y")},
            )
            for document in documents
        ]

    def studies_shared_with(self, user):
        """The studies of the requests ``user`` answers or may claim (asked by
        imaging.selectors, which must not import this app)."""
        from expertise.selectors import studies_shared_with_experts

        return studies_shared_with_experts(user)

    def patient_reader_ids(self, *, patient):
        """Users who may hold a cached grant on the patient's studies through this app: the
        experts of the patient's requests and of the pools they wait in (asked by
        portal.services when the patient's access changes)."""
        from django.db.models import Q

        from expertise.models import PoolMember, Request
        from portal.models import User

        requests = Request.objects.filter(patient=patient)
        return User.objects.filter(
            Q(pk__in=requests.values("expert"))
            | Q(
                professional__expertise_memberships__role=PoolMember.Role.EXPERT,
                professional__expertise_memberships__pool__in=requests.values("pool"),
            )
        ).values_list("pk", flat=True)

    def merge_patient(self, *, source, target):
        """Two records of one person merged (portal.services.patient_merge, which must not
        import this app): the survivor takes the requests and their billing acts (the
        yearly limit of acts counts per person)."""
        from expertise.models import Act, Request

        Request.objects.filter(patient=source).update(patient=target)
        Act.objects.filter(patient=source).update(patient=target)

    def imaging_activity(self, *, starts_at, zone):
        """The programme's tele-expertise figures since ``starts_at`` (asked by
        imaging.activity, which must not import this app), by the requesting establishment:
        requests sent with studies, those with a study of another establishment among them,
        requests closed with an exam avoided, with a transfer avoided, or with the answer of
        before that split ("a referral or an exam"), and the time to answer of the requests
        sent that month (expertise.indicators.answer_times)."""
        from django.db.models import Count
        from django.db.models.functions import TruncMonth

        from expertise.indicators import answer_times
        from expertise.models import Request
        from imaging.activity import ActivityFigure, studies_attached_figures

        yield from studies_attached_figures(
            Request.objects.filter(sent_at__gte=starts_at, requester_establishment__isnull=False),
            owner="request",
            establishment="requester_establishment_id",
            moment="sent_at",
            zone=zone,
            figures=("expertise_requests_with_studies", "expertise_requests_with_other_studies"),
        )
        figure_of = {
            Request.Outcome.EXAM_AVOIDED: "expertise_exam_avoided",
            Request.Outcome.TRANSFER_AVOIDED: "expertise_transfer_avoided",
            Request.Outcome.AVOIDED: "expertise_referral_or_exam_avoided",
        }
        avoided = (
            Request.objects.filter(
                closed_at__gte=starts_at,
                outcome__in=list(figure_of),
                requester_establishment__isnull=False,
            )
            .annotate(month=TruncMonth("closed_at", tzinfo=zone))
            .order_by()
            .values("requester_establishment_id", "month", "outcome")
            .annotate(count=Count("pk"))
        )
        for row in avoided:
            yield ActivityFigure(
                row["requester_establishment_id"],
                row["month"],
                "",
                figure_of[row["outcome"]],
                row["count"],
            )
        for row in answer_times(sent_since=starts_at, zone=zone):
            establishment_id, month = row["requester_establishment_id"], row["month"]
            yield ActivityFigure(establishment_id, month, "", "expertise_answered", row["answered"])
            yield ActivityFigure(
                establishment_id,
                month,
                "",
                "expertise_answer_seconds",
                int(row["waited"].total_seconds()),
            )
