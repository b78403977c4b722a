"""Read-only pages for auditors: the audit log, on screen and as CSV (the prediction history is diagnosis's).

Each read is itself written to the audit trail, with the filters used and the patients and studies it showed.
"""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.access import require_capability
from accounts.roles import Capability
from cxr_portal.csv_export import csv_download
from cxr_portal.filters import filters_for_audit, filters_given

from . import selectors
from .forms import AuditEventFilterForm
from .services import audit_read_many, query_for_audit

PAGE_SIZE = 50


@login_required
@require_GET
def event_list(request):
    require_capability(user=request.user, capability=Capability.VIEW_AUDIT, action="audit.view")
    form = AuditEventFilterForm(request.GET or None)
    filters = filters_given(form)
    page = Paginator(selectors.audit_events_filtered(**filters), PAGE_SIZE).get_page(request.GET.get("page"))
    # Iterating the page loads its events once; the template reuses that list.
    audit_read_many(actor=request.user, action="audit.view", query=query_for_audit(request.GET),
                    study_identifiers=[event.study_identifier for event in page],
                    patient_identifiers=[event.patient_identifier for event in page],
                    details={"filters": filters_for_audit(filters), "page": page.number})
    return render(request, "audit/event_list.html", {"form": form, "page": page})


EVENT_COLUMNS = ["sequence", "created_at", "actor_username", "actor_role", "action", "object_type", "object_id",
                 "patient_identifier", "study_identifier", "outcome", "client_ip", "user_agent", "details",
                 "previous_hash", "hash"]


@login_required
@require_GET
def event_export(request):
    require_capability(user=request.user, capability=Capability.VIEW_AUDIT, action="audit.export")
    filters = filters_given(AuditEventFilterForm(request.GET or None))
    events = selectors.audit_events_filtered(**filters)
    # The event is written before the rows stream, so the identifiers are read up front: one query for the
    # distinct pairs rather than a list as long as the export. The export's own event names no patient.
    identifiers = list(events.order_by().values_list("study_identifier", "patient_identifier").distinct())
    # Recorded before the export runs, so the export's own event is part of what a later export shows.
    audit_read_many(actor=request.user, action="audit.export", query=query_for_audit(request.GET),
                    study_identifiers=[accession for accession, _mrn in identifiers],
                    patient_identifiers=[mrn for _accession, mrn in identifiers],
                    details={"filters": filters_for_audit(filters), "rows": events.count()})
    rows = ([getattr(event, column) for column in EVENT_COLUMNS] for event in events.iterator(chunk_size=2000))
    return csv_download(rows, header=EVENT_COLUMNS, filename=f"audit-log-{timezone.now():%Y%m%d-%H%M%S}.csv")
