"""The audit log: filtered and exported, every read audited."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from audit import selectors
from audit.models import AuditEvent
from audit.services import audit_record
from tests.conftest import csv_rows
from tests.factories import PatientFactory


@pytest.mark.django_db
def test_audit_log_reads_are_themselves_audited(auditor_client, auditor):
    response = auditor_client.get(reverse("audit:event_list"), {"user": "dr_ana", "outcome": "denied"})
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="audit.view")
    assert event.actor_username == auditor.username and event.actor_role == "auditor"
    assert event.details == {"query": {"user": "dr_ana", "outcome": "denied"}, "filters": {"user": "dr_ana", "outcome": "denied"},
                             "studies": [], "patients": [], "count": 0, "page": 1}


@pytest.mark.django_db
def test_audit_log_page_records_the_patients_and_studies_it_showed(auditor_client, clinician, study, monkeypatch):
    other = PatientFactory(mrn="MRN000999")
    audit_record(actor=clinician, action="test.read", patient=other)
    audit_record(actor=clinician, action="test.event")
    shown = AuditEvent.objects.all()
    expected_patients = sorted({event.patient_identifier for event in shown if event.patient_identifier})
    expected_studies = sorted({event.study_identifier for event in shown if event.study_identifier})
    assert expected_patients == ["MRN000123", "MRN000999"] and expected_studies == ["ACC-STUDY"]

    assert auditor_client.get(reverse("audit:event_list")).status_code == 200
    view = AuditEvent.objects.get(action="audit.view")
    assert (view.details["patients"], view.details["studies"], view.details["count"]) == (expected_patients, expected_studies, 1)
    assert (view.details["query"], view.details["page"]) == ({}, 1)

    # Only the page shown counts: one event a page, newest first, so page 3 is the test.read above.
    monkeypatch.setattr("audit.views.PAGE_SIZE", 1)
    assert auditor_client.get(reverse("audit:event_list"), {"page": "3"}).status_code == 200
    second = AuditEvent.objects.filter(action="audit.view").latest("sequence")
    assert (second.details["patients"], second.details["studies"], second.details["count"]) == (["MRN000999"], [], 1)
    assert (second.details["query"], second.details["page"]) == ({"page": "3"}, 3)

    # An auditor looking for who saw patient MRN000999 finds both reads of the audit log that showed it.
    monkeypatch.undo()
    found = auditor_client.get(reverse("audit:event_list"), {"patient": "MRN000999", "action": "audit.view"})
    assert found.content.decode().count('data-testid="audit-event"') == 2
    assert set(selectors.audit_events_filtered(patient="MRN000999", action="audit.view")) == {view, second}


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
    assert export.actor_username == auditor.username and export.details == {
        "query": {"action": "test.event"}, "filters": {"action": "test.event"}, "rows": 1,
        "studies": [], "patients": [], "count": 0}
    assert AuditEvent.objects.filter(action__startswith="audit.").count() == 1


@pytest.mark.django_db
def test_audit_log_csv_export_records_every_patient_and_study_it_exported(auditor_client, clinician, study):
    audit_record(actor=clinician, action="test.read", patient=PatientFactory(mrn="MRN000999"))
    audit_record(actor=clinician, action="test.read", study=study)  # the same pair again: named once
    response = auditor_client.get(reverse("audit:event_export"))
    rows = csv_rows(response)
    export = AuditEvent.objects.get(action="audit.export")
    exported = [row for row in rows if row["action"] != "audit.export"]
    assert export.details["patients"] == sorted({row["patient_identifier"] for row in exported} - {""}) == ["MRN000123", "MRN000999"]
    assert export.details["studies"] == sorted({row["study_identifier"] for row in exported} - {""}) == ["ACC-STUDY"]
    assert export.details["rows"] == len(exported) and export.details["count"] == 1
    # The patient filter finds the export among the reads that showed the patient.
    assert export in selectors.audit_events_filtered(patient="MRN000999")


@pytest.mark.django_db
def test_audit_log_csv_export_gathers_identifiers_in_one_query_however_many_patients(auditor_client, clinician):
    from tests.accounts.test_administration import queries_for

    audit_record(actor=clinician, action="test.read", patient=PatientFactory())
    few = queries_for(auditor_client, reverse("audit:event_export"))
    for _ in range(5):
        audit_record(actor=clinician, action="test.read", patient=PatientFactory())
    assert queries_for(auditor_client, reverse("audit:event_export")) == few
    assert len(AuditEvent.objects.filter(action="audit.export").latest("sequence").details["patients"]) == 6


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
