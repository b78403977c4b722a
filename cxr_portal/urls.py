from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from diagnosis.api import AgreementView, AlertViewSet, PatientViewSet, StudyViewSet

router = DefaultRouter(use_regex_path=False)
router.register("patients", PatientViewSet, basename="patient")
router.register("studies", StudyViewSet, basename="study")
router.register("alerts", AlertViewSet, basename="alert")

urlpatterns = [
    path("", include("diagnosis.urls")),
    path("accounts/", include("accounts.urls")),
    path("administration/", include("accounts.administration_urls")),
    path("audit/", include("audit.urls")),
    path("api/model-versions/agreement/", AgreementView.as_view(), name="api-model-version-agreement"),
    path("api/", include(router.urls)),
    path("api/auth/", include("accounts.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("django-admin/", admin.site.urls),
]
