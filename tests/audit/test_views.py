"""The audit log: filtered and exported, every read audited."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from tests.conftest import csv_rows


@pytest.mark.django_db
def test_audit_log_reads_are_themselves_audited(auditor_client, auditor):
    response = auditor_client.get(reverse("audit:event_list"), {"user": "dr_ana", "outcome": "denied"})
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="audit.view")
    assert event.actor_username == auditor.username and event.actor_role == "auditor"
    assert event.details == {"filters": {"user": "dr_ana", "outcome": "denied"}, "page": 1}


@pytest.mark.django_db
def test_audit_log_filters_by_user_patient_action_outcome_and_date(auditor_client, clinician, study):
    audit_record(actor=clinician, action="test.denied", outcome="denied")
    page = lambda **filters: auditor_client.get(reverse("audit:event_list"), filters).content.decode()  # noqa: E731
    assert "test.denied" in page(user="dr_ana") and "test.denied" not in page(user="someone_else")
    assert "study.upload" in page(patient="MRN000123") and "test.denied" not in page(patient="MRN000123")
    assert "test.denied" in page(action="test.") and "study.upload" not in page(action="test.")
    assert "test.denied" in page(outcome="denied") and "study.upload" not in page(outcome="denied")
    today = timezone.now().date()
    assert "test.denied" in page(date_from=today.isoformat(), date_to=today.isoformat())
    assert "test.denied" not in page(date_to=(today - datetime.timedelta(days=1)).isoformat())


@pytest.mark.django_db
def test_audit_log_csv_export_is_filtered_audited_and_safe_for_spreadsheets(auditor_client, auditor, clinician):
    audit_record(actor=clinician, action="test.event", details={"note": "=HYPERLINK(\"http://evil\")"})
    audit_record(actor=clinician, action="other.event")
    response = auditor_client.get(reverse("audit:event_export"), {"action": "test.event"})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;") and response["Content-Type"].startswith("text/csv")
    rows = csv_rows(response)
    assert [row["action"] for row in rows] == ["test.event"]
    assert rows[0]["actor_username"] == "dr_ana" and len(rows[0]["hash"]) == 64
    export = AuditEvent.objects.get(action="audit.export")
    assert export.actor_username == auditor.username and export.details == {"filters": {"action": "test.event"}, "rows": 1}
    assert AuditEvent.objects.filter(action__startswith="audit.").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["audit:event_list", "audit:event_export", "diagnosis:prediction_history", "diagnosis:prediction_export"])
@pytest.mark.parametrize("role", ["clinician", "administrator"])
def test_only_auditors_read_the_audit_pages(client, name, role, request):
    user = request.getfixturevalue(role)
    client.force_login(user)
    assert client.get(reverse(name)).status_code == 403
    assert AuditEvent.objects.filter(actor_username=user.username, outcome="denied").count() == 1


@pytest.mark.django_db
def test_audit_log_query_count_does_not_grow_with_events(auditor_client, clinician):
    from tests.accounts.test_administration import queries_for

    audit_record(actor=clinician, action="test.event")
    few = queries_for(auditor_client, reverse("audit:event_list"))
    for number in range(60):
        audit_record(actor=clinician, action="test.event", details={"number": number})
    assert queries_for(auditor_client, reverse("audit:event_list")) == few
