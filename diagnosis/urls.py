from django.urls import path

from . import model_version_views, operations_views, prediction_history_views, site_adaptation_views, views

app_name = "diagnosis"

urlpatterns = [
    path("", views.home, name="home"),
    path("worklist/", views.worklist, name="worklist"),
    path("operations/", operations_views.operations_dashboard, name="operations"),
    path("worklist/statuses/", views.study_statuses, name="study_statuses"),
    path("worklist/export.csv", views.worklist_export_csv, name="worklist_export_csv"),
    path("patients/", views.patient_list, name="patient_list"),
    path("patients/new/", views.patient_create_view, name="patient_create"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient_detail"),
    path("patients/<int:patient_id>/upload/", views.study_upload, name="study_upload"),
    path("studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/image.png", views.study_image, name="study_image"),
    path("studies/<int:study_id>/heatmap.png", views.study_heatmap, name="study_heatmap"),
    path("studies/<int:study_id>/report.pdf", views.study_report, name="study_report"),
    path("studies/<int:study_id>/feedback/", views.study_feedback, name="study_feedback"),
    path("alerts/", views.alert_list, name="alert_list"),
    path("alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge_view, name="alert_acknowledge"),
    path("alerts/deliveries/", views.alert_deliveries, name="alert_deliveries"),
    path("results/deliveries/", views.result_deliveries, name="result_deliveries"),
    path("models/", model_version_views.model_versions, name="model_versions"),
    path("models/<int:model_version_id>/activate/", model_version_views.model_version_activate_view,
         name="model_version_activate"),
    path("models/<int:model_version_id>/retire/", model_version_views.model_version_retire_view,
         name="model_version_retire"),
    path("models/<int:version_id>/monitoring/", views.model_version_monitoring, name="model_version_monitoring"),
    path("models/site/", site_adaptation_views.site_adaptation, name="site_adaptation"),
    path("models/site/import/", site_adaptation_views.site_import_view, name="site_import"),
    path("models/site/adapt/", site_adaptation_views.site_adapt_view, name="site_adapt"),
    path("models/rollback/", site_adaptation_views.model_version_rollback_view, name="model_version_rollback"),
    path("models/<int:model_version_id>/compare/", site_adaptation_views.model_version_compare,
         name="model_version_compare"),
    path("models/<int:model_version_id>/promote/", site_adaptation_views.model_version_promote_view,
         name="model_version_promote"),
    path("models/<int:model_version_id>/shadow/", site_adaptation_views.model_version_shadow_view,
         name="model_version_shadow"),
    # For auditors, beside the audit log (/audit/events/).
    path("audit/predictions/", prediction_history_views.prediction_history, name="prediction_history"),
    path("audit/predictions/export.csv", prediction_history_views.prediction_export, name="prediction_export"),
]
