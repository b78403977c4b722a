"""The prediction history for auditors: filtered and exported, every read audited."""

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from diagnosis.services.ingest import study_create
from tests import images
from tests.conftest import csv_rows
from tests.security.records import make_alert, make_feedback, make_model_version, make_prediction


@pytest.mark.django_db
def test_prediction_history_shows_model_probabilities_threshold_feedback_and_alerts(auditor_client, auditor, clinician, study):
    prediction = make_prediction(study, make_model_version("history-model"), covid=0.8)
    make_feedback(prediction, clinician, correct_label="normal", note="no opacities")
    alert = make_alert(prediction)
    alert.acknowledged_by, alert.acknowledged_at = clinician, timezone.now()
    alert.save()
    page = auditor_client.get(reverse("diagnosis:prediction_history")).content.decode()
    for expected in ("history-model 1", "ACC-STUDY", "0.800", "0.4", "dr_ana", "no opacities", "Acknowledged by dr_ana"):
        assert expected in page
    assert AuditEvent.objects.filter(action="prediction.history_view", actor_username=auditor.username).count() == 1

    rows = csv_rows(auditor_client.get(reverse("diagnosis:prediction_export"), {"patient": "MRN000123"}))
    assert len(rows) == 1
    row = rows[0]
    assert (row["model_name"], row["model_version"], row["probability_covid"], row["covid_threshold"]) == ("history-model", "1", "0.8", "0.4")
    assert row["feedback"] == "dr_ana: normal (no opacities)" and "acknowledged by dr_ana" in row["alerts"]
    export = AuditEvent.objects.get(action="prediction.history_export")
    assert export.details == {"filters": {"patient": "MRN000123"}, "rows": 1, "query": {"patient": "MRN000123"},
                              "studies": ["ACC-STUDY"], "patients": ["MRN000123"], "count": 1}


@pytest.mark.django_db
def test_a_withdrawn_alert_reads_withdrawn_in_the_history_its_csv_and_the_alert_list(auditor_client, clinician, study):
    from diagnosis.services.feedback import feedback_record
    from tests.conftest import logged_in_client

    prediction = make_prediction(study, make_model_version("withdrawn-model"), covid=0.8)
    make_alert(prediction)
    study.status = "completed"
    study.save()
    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="normal", note="")
    history = auditor_client.get(reverse("diagnosis:prediction_history")).content.decode()
    alerts_page = logged_in_client(clinician).get(reverse("diagnosis:alert_list")).content.decode()
    for page in (history, alerts_page):
        assert 'data-alert-state="withdrawn"' in page and "Withdrawn: dr_ana recorded a finding other than COVID-19" in page
        assert "Open" not in page.split('data-testid="alert-state"')[1].split("</span></span>")[0]
    row = csv_rows(auditor_client.get(reverse("diagnosis:prediction_export")))[0]
    assert "withdrawn by dr_ana" in row["alerts"] and "open" not in row["alerts"]


@pytest.mark.django_db
def test_prediction_history_filters(auditor_client, study):
    make_prediction(study, make_model_version("filter-model"), covid=0.1)
    page = lambda **filters: auditor_client.get(reverse("diagnosis:prediction_history"), filters).content.decode()  # noqa: E731
    assert "ACC-STUDY" in page(model="filter-model") and "ACC-STUDY" not in page(model="other")
    assert "ACC-STUDY" in page(alert="no") and "ACC-STUDY" not in page(alert="yes")
    assert "ACC-STUDY" in page(user="dr_ana") and "ACC-STUDY" not in page(patient="MRN-NOBODY")


@pytest.mark.django_db
def test_prediction_history_query_count_does_not_grow_with_rows(auditor_client, clinician, patient, queued_inference, django_assert_max_num_queries):
    version = make_model_version("many")
    for number in range(8):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(images.gradient(seed=number)),
                             accession_number=f"ACC-{number}")
        prediction = make_prediction(study, version)
        make_feedback(prediction, clinician)
    with django_assert_max_num_queries(20):
        assert auditor_client.get(reverse("diagnosis:prediction_history")).status_code == 200
