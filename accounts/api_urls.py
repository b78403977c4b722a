from django.urls import path

from . import views

urlpatterns = [
    path("token/", views.api_token, name="api-token"),
]
