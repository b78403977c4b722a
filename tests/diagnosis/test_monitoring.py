"""The site monitor in the portal: this site's results and feedback against the version's validation films."""

import shutil

import pytest
from django.core import mail
from django.urls import reverse

from audit.models import AuditEvent
from diagnosis.models import ModelVersion
from diagnosis.services import monitoring
from diagnosis.services.feedback import feedback_record
from diagnosis.services.model_registry import model_version_register
from ml.serving.monitoring import ALARM, OK, TOO_FEW, Film, add_reference, reference_from_films
from tests.diagnosis import factories
from tests.factories import UserFactory

# Validation: 60 films per class, right 4 times in 5; COVID-19 alerts on 57 of 60 COVID-19 films and on
# 12 of 120 others; 3 of 180 films unfamiliar.
VALIDATION = (
    [Film("covid", True, (), "covid")] * 48 + [Film("pneumonia", True, (), "covid")] * 9
    + [Film("pneumonia", False, (), "covid")] * 3
    + [Film("normal", False, (), "normal")] * 48 + [Film("pneumonia", True, (), "normal")] * 6
    + [Film("pneumonia", False, ("unfamiliar",), "normal")] * 3 + [Film("pneumonia", False, (), "normal")] * 3
    + [Film("pneumonia", False, (), "pneumonia")] * 48 + [Film("covid", True, (), "pneumonia")] * 6
    + [Film("normal", False, (), "pneumonia")] * 6
)


@pytest.fixture
def monitored_model(db, tiny_model_dir, tmp_path):
    path = tmp_path / "monitored"
    shutil.copytree(tiny_model_dir, path)
    add_reference(path, reference_from_films(VALIDATION))
    return model_version_register(artifact_dir=path, activate=True)


def _results(*, model, patient, clinician, monkeypatch, count: int, label: str, covid: float, confirmed: str = "",
             warnings=None):
    """``count`` stored results of ``model``; with ``confirmed``, each gets a clinician's feedback naming it."""
    for _ in range(count):
        study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
        prediction = factories.completed_prediction(study=study, model=model, covid=covid, label=label,
                                                    warnings=warnings)
        if confirmed:
            feedback_record(author=clinician, prediction=prediction, agrees=confirmed == label,
                            correct_label="" if confirmed == label else confirmed)


@pytest.mark.django_db
def test_results_like_validation_do_not_alarm(monitored_model, patient, clinician, monkeypatch):
    threshold = monitored_model.covid_threshold
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="normal", covid=threshold / 2, confirmed="normal")
    report = monitoring.model_version_monitoring_report(model_version=monitored_model)
    assert report.status == OK
    assert report.results == report.confirmed == 12
    checks = {check.code: check for check in report.checks}
    assert (checks["false_alerts"].site_hits, checks["false_alerts"].site_n) == (0, 12)
    assert (checks["false_alerts"].reference_hits, checks["false_alerts"].reference_n) == (12, 120)
    assert checks["sensitivity"].status == TOO_FEW


@pytest.mark.django_db
def test_monitor_summary_says_in_plain_words_when_the_model_behaves_as_on_validation(monitored_model, patient,
                                                                                    clinician, monkeypatch):
    from diagnosis.texts import monitor_summary

    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="normal", covid=monitored_model.covid_threshold / 2, confirmed="normal")
    summary = monitor_summary(monitoring.model_version_monitoring_report(model_version=monitored_model), days=90)
    assert summary.startswith("In the last 90 days (12 results, 12 of them confirmed by clinician feedback), this "
                              "model behaves here as it did on its validation films")
    empty = monitoring.model_version_monitoring_report(model_version=monitored_model, days=None)
    empty.status, empty.results, empty.confirmed = "too_few", 2, 0
    assert "too little to tell yet" in monitor_summary(empty, days=0)


@pytest.mark.django_db
def test_a_site_where_the_model_alerts_on_normal_films_alarms(monitored_model, patient, clinician, monkeypatch):
    # The NIH failure of the leave-one-source-out run: normal films, COVID-19 alerts, clinicians correcting them.
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="covid", covid=0.99, confirmed="normal")
    report = monitoring.model_version_monitoring_report(model_version=monitored_model)
    assert report.status == ALARM
    assert {check.code for check in report.alarms} == {"false_alerts", "recall:normal"}


@pytest.mark.django_db
def test_unfamiliar_films_alarm_without_any_feedback(monitored_model, patient, clinician, monkeypatch):
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=10,
             label="normal", covid=0.01, warnings=["unfamiliar"])
    report = monitoring.model_version_monitoring_report(model_version=monitored_model)
    assert report.confirmed == 0
    assert [check.code for check in report.alarms] == ["warning:unfamiliar"]


@pytest.mark.django_db
def test_the_latest_feedback_counts_and_other_is_not_a_truth(monitored_model, patient, clinician, monkeypatch):
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=2,
             label="covid", covid=0.99, confirmed="normal")
    predictions = list(monitored_model.predictions.order_by("id"))
    feedback_record(author=clinician, prediction=predictions[0], agrees=True)  # changed their mind
    feedback_record(author=clinician, prediction=predictions[1], agrees=False, correct_label="other")
    films = monitoring.site_films(model_version=monitored_model)
    assert sorted((film.confirmed or "") for film in films) == ["", "covid"]


@pytest.mark.django_db
def test_a_version_without_reference_says_how_to_make_one(active_model):
    report = monitoring.model_version_monitoring_report(model_version=active_model)
    assert report.status == monitoring.NO_REFERENCE
    assert "python -m ml monitor --model" in report.problem


@pytest.mark.django_db
def test_scheduled_run_records_an_alarm_once_mails_administrators_and_clears(
    monitored_model, patient, clinician, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.CXR_MONITOR_EMAIL_RECIPIENTS = ["quality@hospital.example"]
    UserFactory(administrator=True, email="admin@hospital.example")
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="covid", covid=0.99, confirmed="normal")
    with django_capture_on_commit_callbacks(execute=True):
        assert monitoring.monitor_active_model() == ALARM
    with django_capture_on_commit_callbacks(execute=True):
        assert monitoring.monitor_active_model() == ALARM  # nothing new: no second event, no second mail
    version = ModelVersion.objects.get(pk=monitored_model.pk)
    assert version.monitor_alarming
    assert {alarm["code"] for alarm in version.monitor_alarms} == {"false_alerts", "recall:normal"}
    events = AuditEvent.objects.filter(action="model_version.monitor_alarm", object_id=str(version.pk))
    assert events.count() == 1
    assert events.get().actor_username == monitoring.MONITOR_ACTOR
    assert len(mail.outbox) == 1
    assert set(mail.outbox[0].to) == {"quality@hospital.example", "admin@hospital.example"}
    assert "false_alerts: 12/12 here against 12/120 on validation" in mail.outbox[0].body

    # Results of another period only: the window no longer holds the bad ones.
    settings.CXR_MONITOR_WINDOW_DAYS = 0
    monkeypatch.setattr(monitoring, "site_films", lambda **kwargs: [])
    assert monitoring.monitor_active_model() == TOO_FEW
    assert AuditEvent.objects.filter(action="model_version.monitor_clear").count() == 1
    assert not ModelVersion.objects.get(pk=monitored_model.pk).monitor_alarming


@pytest.mark.django_db
def test_result_page_warns_while_the_version_alarms(monitored_model, patient, clinician, monkeypatch):
    from tests.conftest import logged_in_client

    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    factories.completed_prediction(study=study, model=monitored_model, covid=0.01, label="normal")
    client = logged_in_client(clinician)
    url = reverse("diagnosis:study_detail", kwargs={"study_id": study.id})
    assert 'data-testid="monitor-warning"' not in client.get(url).content.decode()
    ModelVersion.objects.filter(pk=monitored_model.pk).update(monitor_status=ALARM)
    page = client.get(url).content.decode()
    assert 'data-testid="monitor-warning"' in page
    assert 'data-testid="disclaimer"' in page


@pytest.mark.django_db
def test_monitor_page_shows_the_checks_and_a_chart_and_is_audited(
    monitored_model, patient, clinician, administrator, monkeypatch
):
    from tests.conftest import logged_in_client

    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="covid", covid=0.99, confirmed="normal")
    client = logged_in_client(administrator)
    url = reverse("diagnosis:model_version_monitoring", kwargs={"version_id": monitored_model.pk})
    page = client.get(url, {"days": "30"}).content.decode()
    assert 'data-testid="monitor-chart"' in page and "<svg" in page
    assert "12/12" in page and "12/120" in page
    assert "Alarm: this version behaves unlike its validation here" in page
    # The page opens with the answer in plain words, before any statistic.
    summary = page.split('data-testid="monitor-summary">')[1].split("</p>")[0]
    assert page.index('data-testid="monitor-summary"') < page.index('data-testid="monitor-chart"')
    assert summary.startswith("In the last 30 days (12 results, 12 of them confirmed by clinician feedback), this "
                              "model behaves differently here than on its validation films")
    assert "raises more false COVID-19 alerts than on validation" in summary
    assert "recognises fewer No findings films than on validation" in summary
    assert "Compared with the version's 180 validation films." in page
    event = AuditEvent.objects.filter(action="model_version.monitoring_view").first()
    assert event.details == {"days": 30, "status": ALARM}
    # A window the page does not offer falls back to the default instead of failing.
    assert client.get(url, {"days": "abc"}).status_code == 200
    assert client.get(url, {"days": "7"}).status_code == 200
    assert client.get(reverse("diagnosis:model_version_monitoring", kwargs={"version_id": 999999})).status_code == 404


@pytest.mark.django_db
def test_after_recalibration_the_page_names_the_local_films_it_compares_with(db, tiny_model_dir, tmp_path,
                                                                            administrator):
    from tests.conftest import logged_in_client

    path = tmp_path / "recalibrated"
    shutil.copytree(tiny_model_dir, path)
    add_reference(path, reference_from_films(VALIDATION[:60], subset="recalibration"))  # as python -m ml recalibrate stores
    version = model_version_register(artifact_dir=path, activate=True)
    page = logged_in_client(administrator).get(
        reverse("diagnosis:model_version_monitoring", kwargs={"version_id": version.pk})).content.decode()
    assert "Compared with the 60 local films the operating point was refitted on (python -m ml recalibrate)." in page


@pytest.mark.django_db
def test_warnings_are_judged_within_each_predicted_class(db, tiny_model_dir, tmp_path, patient, clinician,
                                                         administrator, monkeypatch, settings,
                                                         django_capture_on_commit_callbacks):
    """A site sending more COVID-19 sees more of a warning that is commoner on COVID-19 films: no alarm for that."""
    import io

    from django.core.management import call_command

    from tests.conftest import logged_in_client

    path = tmp_path / "warnings"
    shutil.copytree(tiny_model_dir, path)
    # On validation "unfamiliar" marked 10 of 50 films called COVID-19 and none of the 200 others.
    validation = ([Film("covid", True, ("unfamiliar",), "covid")] * 10 + [Film("covid", True, (), "covid")] * 40
                  + [Film("normal", False, (), "normal")] * 100 + [Film("pneumonia", False, (), "pneumonia")] * 100)
    add_reference(path, reference_from_films(validation))
    version = model_version_register(artifact_dir=path, activate=True)
    settings.UPLOAD_RATE_LIMIT = 100  # one clinician uploads 60 films here
    settings.CXR_MONITOR_MAX_PREVALENCE = 0  # this test is about the warnings, not the share of alerts
    # 50 results, all called COVID-19, 10 of them unfamiliar: 20% against 4% of all validation films, but
    # exactly validation's share among the films it called COVID-19.
    _results(model=version, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=10,
             label="covid", covid=0.99, warnings=["unfamiliar"])
    _results(model=version, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=40,
             label="covid", covid=0.99)
    report = monitoring.model_version_monitoring_report(model_version=version)
    unfamiliar = next(check for check in report.checks if check.code == "warning:unfamiliar")
    assert unfamiliar.status == OK and (unfamiliar.site_hits, unfamiliar.site_n) == (10, 50)
    assert unfamiliar.strata[0] == [10, 50, 10, 50]
    assert unfamiliar.reference_rate == pytest.approx(0.2)
    page = logged_in_client(administrator).get(
        reverse("diagnosis:model_version_monitoring", kwargs={"version_id": version.pk})).content.decode()
    assert "10/250 (4%)" in page and "20% at this site&#x27;s mix of predicted classes" not in page
    assert "20% at this site's mix of predicted classes" in page
    assert "compared within each class the model called" in page
    assert "COVID-19: 10/50 here, 10/50 on validation" in page and "No findings: 0/0 here, 0/100 on validation" in page
    assert report.predicted == {"covid": 50, "normal": 0, "pneumonia": 0}
    assert "<tr><td>COVID-19</td><td>50 (100%)</td><td>50 (20%)</td></tr>" in page

    # Films called normal that are unfamiliar, which validation never showed: an alarm, with the rate in the mail.
    settings.CXR_MONITOR_EMAIL_RECIPIENTS = ["quality@hospital.example"]
    _results(model=version, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=10,
             label="normal", covid=0.01, warnings=["unfamiliar"])
    with django_capture_on_commit_callbacks(execute=True):
        assert monitoring.monitor_active_model() == ALARM
    assert "warning:unfamiliar: 20/60 here against 10/250 on validation (16.7% at this site's mix of predicted " \
        "classes)" in mail.outbox[0].body
    out = io.StringIO()
    call_command("monitor_model", stdout=out)
    assert "20/60 here, 10/250 on validation (16.7% at this site's mix of predicted classes)" in out.getvalue()
    assert "Called by the model, here against validation: covid 50/60 against 50/250, normal 10/60 against " \
        "100/250, pneumonia 0/60 against 100/250" in out.getvalue()


@pytest.mark.django_db
def test_a_reference_counted_at_another_threshold_is_not_used(monitored_model, patient, clinician, monkeypatch):
    import json

    from ml.serving.artifact import load_metadata

    path = monitoring.artifact_dir_for(monitored_model)
    assert load_metadata(path).monitoring["operating_point"] == {
        "temperature": monitored_model.temperature, "covid_threshold": monitored_model.covid_threshold}
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["monitoring"]["operating_point"]["covid_threshold"] += 0.1  # counted before a recalibration
    (path / "metadata.json").write_text(json.dumps(metadata))
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="covid", covid=0.99, confirmed="normal")
    report = monitoring.model_version_monitoring_report(model_version=monitored_model)
    assert report.status == monitoring.NO_REFERENCE and report.results == 12
    assert "counted at another temperature or threshold" in report.problem


@pytest.mark.django_db
def test_the_sites_false_alert_limit_alarms_and_shows_on_the_page(
    monitored_model, patient, clinician, administrator, monkeypatch, settings
):
    from tests.conftest import logged_in_client

    settings.CXR_MONITOR_MAX_FALSE_ALERTS = 0.5
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="normal", covid=0.99, confirmed="normal")  # right class, but every one raised the alert
    checks = {check.code: check for check in
              monitoring.model_version_monitoring_report(model_version=monitored_model).checks}
    assert checks["false_alert_limit"].status == ALARM and checks["false_alert_limit"].limit == 0.5
    assert checks["sensitivity_target"].limit == pytest.approx(0.95)
    page = logged_in_client(administrator).get(
        reverse("diagnosis:model_version_monitoring", kwargs={"version_id": monitored_model.pk})).content.decode()
    assert "limit 0.50" in page
    settings.CXR_MONITOR_MAX_FALSE_ALERTS = 0
    codes = {check.code for check in monitoring.model_version_monitoring_report(model_version=monitored_model).checks}
    assert "false_alert_limit" not in codes


@pytest.mark.django_db
def test_more_alerts_than_the_sites_covid_share_allows_alarm_without_feedback(
    monitored_model, patient, clinician, monkeypatch, settings
):
    settings.CXR_MONITOR_MAX_FALSE_ALERTS = 0.5
    settings.CXR_MONITOR_MAX_PREVALENCE = 0.2  # at most 0.2 + 0.8 * 0.5 = 60% of results may raise the alert
    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=20,
             label="pneumonia", covid=0.99)  # no feedback: only the results themselves
    report = monitoring.model_version_monitoring_report(model_version=monitored_model)
    assert report.confirmed == 0
    assert [check.code for check in report.alarms] == ["alert_rate_limit"]
    ceiling = report.alarms[0]
    assert (ceiling.site_hits, ceiling.site_n) == (20, 20) and ceiling.limit == pytest.approx(0.6)
    settings.CXR_MONITOR_MAX_PREVALENCE = 0
    report = monitoring.model_version_monitoring_report(model_version=monitored_model)
    assert "alert_rate_limit" not in {check.code for check in report.checks} and report.status != ALARM


@pytest.mark.django_db
def test_a_version_within_its_limits_on_validation_breaks_none(monitored_model):
    # 57 of 60 COVID-19 validation films alerted (target 95%), 12 of 120 others (limit 80%).
    assert monitoring.model_version_reference_breaches(monitored_model) == []


@pytest.mark.django_db
def test_a_version_whose_validation_already_breaks_a_limit_says_so_before_any_result(
    db, tiny_model_dir, tmp_path, administrator
):
    from tests.conftest import logged_in_client

    # The LOSO run without NIH: every non-COVID-19 validation film raised the alert.
    path = tmp_path / "already-bad"
    shutil.copytree(tiny_model_dir, path)
    add_reference(path, reference_from_films([Film("covid", True, (), "covid")] * 30
                                             + [Film("covid", True, (), "pneumonia")] * 20))
    version = model_version_register(artifact_dir=path, activate=True)
    report = monitoring.model_version_monitoring_report(model_version=version)
    assert report.results == 0 and report.status == TOO_FEW
    assert [(b.code, b.reference_hits, b.reference_n) for b in report.breaches] == [("false_alert_limit", 20, 20)]
    page = logged_in_client(administrator).get(
        reverse("diagnosis:model_version_monitoring", kwargs={"version_id": version.pk})).content.decode()
    assert 'data-testid="monitor-breaches"' in page and "20/20 (limit 0.80)" in page
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("monitor_model", stdout=out)
    assert "Validation already breaks false_alert_limit: 20/20 against the limit 80%" in out.getvalue()
    # The administrator who activates it is told at once.
    page = logged_in_client(administrator).post(reverse("diagnosis:model_version_activate", args=[version.id]),
                                                follow=True)
    text = page.content.decode()
    assert "already breaks the site monitor&#x27;s false_alert_limit limit (20 of 20 films against 80%)" in text
    assert "is now the active model" in text


@pytest.mark.django_db
def test_command_prints_the_checks_and_records_on_request(monitored_model, patient, clinician, monkeypatch):
    import io

    from django.core.management import call_command

    _results(model=monitored_model, patient=patient, clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="covid", covid=0.99, confirmed="normal")
    out = io.StringIO()
    call_command("monitor_model", "--days", "0", stdout=out)
    text = out.getvalue()
    assert "all time: 12 results, 12 confirmed by feedback" in text
    assert "alarm    false_alerts" in text and "12/12 here, 12/120 on validation" in text
    assert "Status: alarm" in text
    assert not ModelVersion.objects.get(pk=monitored_model.pk).monitor_alarming  # printing records nothing
    call_command("monitor_model", "--record", stdout=io.StringIO())
    assert ModelVersion.objects.get(pk=monitored_model.pk).monitor_alarming


@pytest.mark.django_db
def test_command_refuses_an_unknown_version():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="No such model version"):
        call_command("monitor_model", "--version-id", "999999")


def test_every_scheduled_task_is_a_registered_task(settings):
    from cxr_portal.celery import app

    app.loader.import_default_modules()
    assert "diagnosis.monitor_active_model" in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry["task"]


@pytest.mark.django_db
def test_monitor_page_offers_the_scheduled_window(monitored_model, administrator, settings):
    from tests.conftest import logged_in_client

    settings.CXR_MONITOR_WINDOW_DAYS = 60
    page = logged_in_client(administrator).get(
        reverse("diagnosis:model_version_monitoring", kwargs={"version_id": monitored_model.pk})).content.decode()
    assert '<option value="60" selected>' in page


@pytest.mark.django_db
def test_worklist_warns_while_the_active_version_alarms(monitored_model, clinician):
    from tests.conftest import logged_in_client

    client = logged_in_client(clinician)
    assert 'data-testid="monitor-warning"' not in client.get(reverse("diagnosis:worklist")).content.decode()
    ModelVersion.objects.filter(pk=monitored_model.pk).update(monitor_status=ALARM)
    assert 'data-testid="monitor-warning"' in client.get(reverse("diagnosis:worklist")).content.decode()


@pytest.mark.django_db
def test_a_lost_reference_does_not_clear_an_alarm(monitored_model):
    ModelVersion.objects.filter(pk=monitored_model.pk).update(monitor_status=ALARM, monitor_alarms=[{"code": "x"}])
    monitored_model.refresh_from_db()
    report = monitoring.MonitoringReport(model_version=monitored_model, since=None, status=monitoring.NO_REFERENCE,
                                         problem="gone")
    assert monitoring.model_version_monitor_record(report=report) is False
    assert ModelVersion.objects.get(pk=monitored_model.pk).monitor_alarming
    assert not AuditEvent.objects.filter(action="model_version.monitor_clear").exists()
