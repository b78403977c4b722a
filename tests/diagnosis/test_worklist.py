"""The triage worklist: filters, triage order, pagination, a fixed number of queries, CSV export."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from diagnosis.models import Study
from diagnosis.services.alerts import alert_raise_for_prediction
from diagnosis.services.feedback import feedback_record
from diagnosis.views import WORKLIST_PAGE_SIZE
from tests.conftest import csv_rows
from tests.diagnosis import factories


def make_study(*, patient, clinician, monkeypatch, model=None, covid=None, age_hours=0, accession="", alert=True):
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch,
                                     accession_number=accession)
    Study.objects.filter(id=study.id).update(created_at=timezone.now() - timedelta(hours=age_hours))
    if covid is None:
        return study
    with transaction.atomic():
        prediction = factories.completed_prediction(study=study, model=model, covid=covid)
        if alert:
            alert_raise_for_prediction(prediction=prediction)
    return study


@pytest.fixture
def model(db):
    return factories.model_version(covid_threshold=0.6, status="active")


@pytest.fixture
def worklist_rows(client, clinician):
    client.force_login(clinician)

    def rows(**params):
        response = client.get(reverse("diagnosis:worklist"), params)
        assert response.status_code == 200
        return [study.accession_number for study in response.context["page"]]

    return rows


@pytest.mark.django_db
def test_triage_order_puts_suspected_covid_first_by_probability_then_oldest_waiting(
    clinician, patient, monkeypatch, model, worklist_rows, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    with django_capture_on_commit_callbacks(execute=True):
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="NEW-PENDING", age_hours=1)
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="OLD-PENDING", age_hours=30)
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.70,
                   accession="COVID-70", age_hours=2)
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.95,
                   accession="COVID-95", age_hours=1)
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.30,
                   accession="LOW-30", age_hours=5)
        withdrawn = make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.99,
                               accession="WRONG-99", age_hours=3)
    feedback_record(author=clinician, prediction=withdrawn.predictions.get(), agrees=False, correct_label="normal")

    order = worklist_rows()
    assert order[:2] == ["COVID-95", "COVID-70"]
    # Then every other study, oldest waiting first (a withdrawn alert no longer counts as suspected).
    assert order[2:] == ["OLD-PENDING", "LOW-30", "WRONG-99", "NEW-PENDING"]


@pytest.mark.django_db
def test_filters_by_status_label_date_patient_and_needs_my_review(
    clinician, second_clinician, patient, monkeypatch, model, worklist_rows
):
    from tests.factories import PatientFactory

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    other_patient = PatientFactory(mrn="MRN-OTHER", name="Tomas Ortega")
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="PENDING", age_hours=1)
    covid = make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.9,
                       accession="COVID", age_hours=24 * 10)
    make_study(patient=other_patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.1,
               accession="NORMAL", age_hours=2)
    feedback_record(author=second_clinician, prediction=covid.predictions.get(), agrees=True)

    assert sorted(worklist_rows(status="completed")) == ["COVID", "NORMAL"]
    assert worklist_rows(status="received") == ["PENDING"]
    assert worklist_rows(predicted_label="covid") == ["COVID"]
    assert worklist_rows(predicted_label="normal") == ["NORMAL"]
    today = timezone.now().date()
    assert sorted(worklist_rows(date_from=(today - timedelta(days=2)).isoformat())) == ["NORMAL", "PENDING"]
    assert worklist_rows(date_to=(today - timedelta(days=5)).isoformat()) == ["COVID"]
    assert worklist_rows(patient="ortega") == ["NORMAL"]
    assert sorted(worklist_rows(patient="MRN000123")) == ["COVID", "PENDING"]
    # Needs my review: completed and no feedback from me on the latest prediction (another clinician's does not count).
    assert worklist_rows(needs_my_review="on") == ["COVID", "NORMAL"]
    feedback_record(author=clinician, prediction=covid.predictions.get(), agrees=True)
    assert worklist_rows(needs_my_review="on") == ["NORMAL"]
    assert worklist_rows(status="completed", predicted_label="normal", patient="Tomas") == ["NORMAL"]
    # A bad filter value is a form error, not a 500, and shows everything.
    assert len(worklist_rows(date_from="not-a-date")) == 3


@pytest.mark.django_db
def test_worklist_is_paginated_and_keeps_the_filters_in_page_links(clinician, patient, monkeypatch, client):
    for number in range(WORKLIST_PAGE_SIZE + 3):
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession=f"P-{number:03d}",
                   age_hours=100 - number)
    client.force_login(clinician)
    first = client.get(reverse("diagnosis:worklist"), {"status": "received"})
    assert len(first.context["page"]) == WORKLIST_PAGE_SIZE
    assert "?status=received&amp;page=2" in first.content.decode()
    second = client.get(reverse("diagnosis:worklist"), {"status": "received", "page": 2})
    assert [study.accession_number for study in second.context["page"]] == ["P-025", "P-026", "P-027"]


@pytest.mark.django_db
def test_worklist_runs_a_fixed_number_of_queries_whatever_its_length(
    clinician, second_clinician, patient, monkeypatch, model, client, django_assert_num_queries
):
    from tests.factories import PatientFactory

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    client.force_login(clinician)

    def add_studies(count, offset):
        for number in range(count):
            study = make_study(patient=PatientFactory(), clinician=clinician, monkeypatch=monkeypatch, model=model,
                               covid=0.3 + 0.6 * (number % 2), accession=f"Q-{offset + number}")
            newer = factories.model_version(covid_threshold=0.6)
            factories.completed_prediction(study=study, model=newer, covid=0.2)
            feedback_record(author=second_clinician, prediction=study.predictions.first(), agrees=True)
        make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession=f"Q-PENDING-{offset}")

    # session, user, role, count, page, predictions prefetch, active model, open-alert badge,
    # and the audit event (savepoint, chain lock, last event, insert, release).
    expected_queries = 13
    add_studies(2, 0)
    client.get(reverse("diagnosis:worklist"))  # the first request after login also saves the session
    with django_assert_num_queries(expected_queries):
        assert client.get(reverse("diagnosis:worklist")).status_code == 200
    add_studies(20, 100)
    with django_assert_num_queries(expected_queries):
        response = client.get(reverse("diagnosis:worklist"), {"needs_my_review": "on", "patient": "a"})
        assert response.status_code == 200
    with django_assert_num_queries(expected_queries):
        response = client.get(reverse("diagnosis:worklist"))
        assert len(response.context["page"]) == 24


@pytest.mark.django_db
def test_csv_export_has_the_filtered_rows_in_triage_order_and_is_audited(
    clinician, patient, monkeypatch, model, client
):
    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="PENDING")
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.2, accession="LOW")
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.9, accession="HIGH")
    from diagnosis.models import Patient

    Patient.objects.filter(id=patient.id).update(name="=HYPERLINK(\"http://evil\")")
    client.force_login(clinician)
    response = client.get(reverse("diagnosis:worklist_export_csv"), {"status": "completed"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = csv_rows(response)
    assert [row["accession_number"] for row in rows] == ["HIGH", "LOW"]
    assert rows[0]["predicted_label"] == "covid" and rows[0]["suspected_covid"] == "yes"
    assert rows[0]["alert_state"] == "open" and float(rows[0]["covid_probability"]) == pytest.approx(0.9)
    assert rows[0]["patient_name"].startswith("'=")  # never a live formula in a spreadsheet
    event = AuditEvent.objects.get(action="study.export_csv")
    assert event.details == {"query": {"status": "completed"}, "studies": ["HIGH", "LOW"], "patients": [patient.mrn], "count": 2}


@pytest.mark.django_db
def test_results_with_warnings_carry_a_badge_in_the_worklist_and_a_column_in_the_export(
    clinician, patient, monkeypatch, model, client
):
    steady = make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="STEADY")
    borderline = make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="BORDER")
    factories.completed_prediction(study=steady, model=model, covid=0.2)
    factories.completed_prediction(study=borderline, model=model, covid=0.3, warnings=["unstable"])
    client.force_login(clinician)

    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert page.count('data-testid="result-warning-badge"') == 1
    assert ">borderline</span>" in page and 'title="This result is borderline' in page
    rows = csv_rows(client.get(reverse("diagnosis:worklist_export_csv")))
    assert {row["accession_number"]: row["warnings"] for row in rows} == {"STEADY": "", "BORDER": "unstable"}


@pytest.mark.django_db
def test_worklist_page_shows_filters_and_the_export_link(client, clinician):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:worklist"), {"status": "failed"}).content.decode()
    assert 'data-testid="worklist-filters"' in page and "Needs my review" in page
    assert reverse("diagnosis:worklist_export_csv") + "?status=failed" in page


@pytest.mark.django_db
def test_api_lists_studies_with_the_worklist_filters_and_triage_order(clinician, patient, monkeypatch, model):
    from rest_framework.test import APIClient

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, accession="OLD", age_hours=9)
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.7, accession="C70")
    make_study(patient=patient, clinician=clinician, monkeypatch=monkeypatch, model=model, covid=0.9, accession="C90")
    api = APIClient()
    api.force_authenticate(clinician)

    def accessions(**params):
        response = api.get("/api/studies/", params)
        assert response.status_code == 200, response.content
        return [study["accession_number"] for study in response.json()["results"]]

    assert accessions(ordering="triage") == ["C90", "C70", "OLD"]
    assert accessions(predicted_label="covid", ordering="triage") == ["C90", "C70"]
    assert accessions(needs_my_review="true") == ["C90", "C70"]
    assert accessions() == ["C90", "C70", "OLD"]  # newest first without triage: C90 was uploaded last
    assert api.get("/api/studies/", {"date_from": "yesterday"}).status_code == 400
