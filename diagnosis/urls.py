from django.urls import path

from . import views

app_name = "diagnosis"

urlpatterns = [
    path("", views.home, name="home"),
    path("worklist/", views.worklist, name="worklist"),
    path("worklist/statuses/", views.study_statuses, name="study_statuses"),
    path("patients/", views.patient_list, name="patient_list"),
    path("patients/new/", views.patient_create_view, name="patient_create"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient_detail"),
    path("patients/<int:patient_id>/upload/", views.study_upload, name="study_upload"),
    path("studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/image.png", views.study_image, name="study_image"),
    path("studies/<int:study_id>/heatmap.png", views.study_heatmap, name="study_heatmap"),
    path("models/", views.model_versions, name="model_versions"),
]
