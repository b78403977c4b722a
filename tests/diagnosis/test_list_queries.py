"""Every list page and list endpoint runs a fixed number of queries, however many rows it shows.

The counts are pinned: a change that adds a query per row (Alert.meaning() walking alert -> prediction ->
model version once per study did: 55 of 70 queries on a 50-row API page) fails here.
"""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from tests.diagnosis.test_worklist import make_study
from tests.diagnosis import factories
from tests.factories import PatientFactory

PAGE_URL_NAMES = {"worklist": "diagnosis:worklist", "patients": "diagnosis:patient_list", "alerts": "diagnosis:alert_list"}
API_URLS = {
    "studies": "/api/studies/",
    "studies-triage": "/api/studies/?ordering=triage",
    "patients": "/api/patients/",
    "alerts": "/api/alerts/",
}


@pytest.fixture
def alerted_studies(clinician, monkeypatch, db):
    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    factories.model_version(covid_threshold=0.6, status="active")

    def add(count: int, offset: int):
        for number in range(count):
            # Each alert's meaning comes from the version that raised it: a different one per study.
            make_study(patient=PatientFactory(), clinician=clinician, monkeypatch=monkeypatch,
                       model=factories.model_version(covid_threshold=0.6),
                       covid=0.9 if number % 2 else 0.2, accession=f"N1-{offset + number}")

    return add


def query_count(fetch) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = fetch()
        assert response.status_code == 200, response.content[:500]
    return len(captured.captured_queries)


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(API_URLS))
def test_api_list_runs_a_fixed_number_of_queries_whatever_its_length(name, clinician, alerted_studies,
                                                                     django_assert_num_queries):
    url = API_URLS[name]
    client = APIClient()
    client.force_authenticate(clinician)
    alerted_studies(2, 0)
    small = query_count(lambda: client.get(url))
    alerted_studies(12, 100)
    with django_assert_num_queries(small):
        response = client.get(url)
    assert response.status_code == 200
    assert EXPECTED_API_QUERIES[name] == small


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(PAGE_URL_NAMES))
def test_list_page_runs_a_fixed_number_of_queries_whatever_its_length(name, clinician, alerted_studies, client,
                                                                      django_assert_num_queries):
    url = reverse(PAGE_URL_NAMES[name])
    client.force_login(clinician)
    alerted_studies(2, 0)
    client.get(url)  # the first request after login also saves the session
    small = query_count(lambda: client.get(url))
    alerted_studies(12, 100)
    with django_assert_num_queries(small):
        assert client.get(url).status_code == 200
    assert EXPECTED_PAGE_QUERIES[name] == small


# Auth (session or token), user, role, count, page, prefetches, the audit event (savepoint, chain lock, last
# event, insert, release), the open-alert badge on pages.
EXPECTED_API_QUERIES = {"studies": 8, "studies-triage": 8, "patients": 7, "alerts": 7}
EXPECTED_PAGE_QUERIES = {"worklist": 13, "patients": 11, "alerts": 11}
# Auth, user, role, study, prediction, the audit event (5), feedback, revisions, model version, the badge.
EXPECTED_STUDY_PAGE_QUERIES = 14


@pytest.mark.django_db
def test_study_page_runs_a_fixed_number_of_queries_whatever_its_feedback(clinician, monkeypatch, client,
                                                                        django_assert_num_queries):
    """The study page lists every clinician's feedback and its revisions: more of them costs no more queries."""
    from diagnosis.services.feedback import feedback_record
    from tests.factories import UserFactory

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    model = factories.model_version(covid_threshold=0.6, status="active")
    study = make_study(patient=PatientFactory(), clinician=clinician, monkeypatch=monkeypatch, model=model,
                       covid=0.9, accession="STUDY-PAGE-1")
    prediction = study.predictions.get()
    url = reverse("diagnosis:study_detail", args=[study.id])
    client.force_login(clinician)
    client.get(url)  # the first request after login also saves the session
    feedback_record(author=clinician, prediction=prediction, agrees=True)
    small = query_count(lambda: client.get(url))
    for number in range(3):
        colleague = UserFactory(username=f"colleague-{number}", clinician=True)
        feedback_record(author=colleague, prediction=prediction, agrees=False, correct_label="pneumonia",
                        note="second reading")
        feedback_record(author=colleague, prediction=prediction, agrees=True, note="revised")
    with django_assert_num_queries(small):
        assert client.get(url).status_code == 200
    assert small == EXPECTED_STUDY_PAGE_QUERIES

