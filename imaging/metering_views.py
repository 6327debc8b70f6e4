"""The usage statements' pages (imaging.metering): the list (by establishment and year), a
statement with its lines, its CSV and its PDF.

Who reads them: imaging.permissions.statement_establishments (the regional programme, a billing
office for its establishments, an establishment's administrators). A statement is opened
through imaging.access.get_statement_for_user: another establishment's is the audited 404 of a
missing one. Every page and export is recorded in the audit trail.
"""

from django import forms
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from imaging import metering
from imaging import permissions as may
from imaging.access import get_statement_for_user
from imaging.models import StatementDocument
from imaging.selectors import statements_of
from portal import audit, documents
from portal.audit import Actor
from portal.documents_views import PdfBlock
from portal.indicators import csv_response, refuse
from portal.models import AuditPurpose
from portal.views import patient_data_view

FIRST_YEAR, LAST_YEAR = 2000, 2100


class StatementFilters(forms.Form):
    establishment = forms.ModelChoiceField(
        label=gettext_lazy("Establishment"),
        queryset=None,
        required=False,
        empty_label=gettext_lazy("All"),
    )
    year = forms.IntegerField(
        label=gettext_lazy("Year"),
        required=False,
        min_value=FIRST_YEAR,
        max_value=LAST_YEAR,
    )

    def __init__(self, *args, establishments, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["establishment"].queryset = establishments.order_by("name")


def _audit(request, *, statement=None, csv: bool = False, **detail) -> None:
    """A page of statements read (DCM 110112 Query) or a statement exported (110106)."""
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.EXPORT if csv else audit.AuditEventId.QUERY,
        action=audit.AuditAction.READ if csv else audit.AuditAction.EXECUTE,
        object_type="imaging.statement",
        object_id=str(statement.pk) if statement else "",
        purpose=AuditPurpose.ADMINISTRATION,
        query="usage statements",
        detail=detail,
    )


@patient_data_view
@require_GET
def statement_list(request):
    establishments = may.statement_establishments(request.user)
    if not establishments.exists():
        refuse(request, purpose=AuditPurpose.ADMINISTRATION, reason="no usage statements")
    form = StatementFilters(request.GET or None, establishments=establishments)
    if request.GET and not form.is_valid():
        return render(
            request, "imaging/metering/list.html", {"form": form, "statements": None}, status=400
        )
    data = form.cleaned_data if request.GET else {}
    statements = list(
        statements_of(
            establishments, establishment=data.get("establishment"), year=data.get("year")
        )
    )
    _audit(
        request,
        establishment=data["establishment"].pk if data.get("establishment") else None,
        year=data.get("year"),
        count=len(statements),
    )
    return render(request, "imaging/metering/list.html", {"form": form, "statements": statements})


@patient_data_view
@require_GET
def statement_detail(request, statement_id):
    statement = get_statement_for_user(request, statement_id)
    lines = list(statement.lines.all())
    _audit(request, statement=statement, lines=len(lines))
    return render(
        request,
        "imaging/metering/statement.html",
        {
            "statement": statement,
            "normal": [line for line in lines if line.kind == line.Kind.NORMAL],
            "corrections": [line for line in lines if line.kind == line.Kind.CORRECTION],
            "outputs": metering.statement_outputs(statement=statement, user=request.user),
        },
    )


@patient_data_view
@require_GET
def statement_csv(request, statement_id):
    statement = get_statement_for_user(request, statement_id)
    lines = list(statement.lines.all())
    _audit(request, statement=statement, csv=True, format="csv", lines=len(lines))
    return csv_response(
        metering.download_name(statement, "csv"), metering.csv_rows(statement, lines)
    )


STATEMENT_PDF = PdfBlock(
    open_subject=get_statement_for_user,
    template="imaging/metering/_outputs.html",
    outputs=lambda statement, user: metering.statement_outputs(statement=statement, user=user),
)


def _pdf_response(request, statement, document: StatementDocument):
    return documents.download_response(
        request,
        document,
        purpose=AuditPurpose.ADMINISTRATION,
        detail={"statement": statement.pk, "format": "pdf"},
        filename=metering.download_name(statement, "pdf"),
        attachment=True,
        altered_message=_(
            "The PDF of this statement was altered since it was made: it was not downloaded. "
            "Make it again."
        ),
        subject={"obj": document},
    )


statement_outputs = STATEMENT_PDF.outputs_view()
statement_pdf = STATEMENT_PDF.download_view(
    documents=lambda statement: statement.documents.all(),
    serve=_pdf_response,
    back=lambda statement: reverse("imaging-statement", args=[statement.pk]),
)
statement_pdf_request = STATEMENT_PDF.request_view(
    ask=lambda request, statement: metering.statement_pdf_request(
        statement=statement, by=Actor.from_request(request)
    ),
    refused=metering.StatementRefused,
    back=lambda request, statement: redirect("imaging-statement", statement_id=statement.pk),
)
