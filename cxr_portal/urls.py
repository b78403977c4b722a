from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from cxr_portal import observability
from cxr_portal.views import favicon
from diagnosis.api import AgreementView, AlertViewSet, PatientViewSet, StudyViewSet
from diagnosis.dicomweb import StowStudiesView

router = DefaultRouter(use_regex_path=False)
# One URL per operation (no /api/studies.json twins): fewer routes to authorise and to test.
router.include_format_suffixes = False
router.register("patients", PatientViewSet, basename="patient")
router.register("studies", StudyViewSet, basename="study")
router.register("alerts", AlertViewSet, basename="alert")

# PostgreSQL down while a middleware loads the session or the user: a 503 page, not a 500.
handler500 = "cxr_portal.middleware.server_error"
handler404 = "cxr_portal.views.page_not_found"

urlpatterns = [
    path("health/live", observability.health_live, name="health-live"),
    path("health/ready", observability.health_ready, name="health-ready"),
    path("metrics", observability.metrics, name="metrics"),
    path("", include("diagnosis.urls")),
    path("accounts/", include("accounts.urls")),
    # The language picker posts to i18n/setlang/ (Django's set_language view).
    path("i18n/", include("django.conf.urls.i18n")),
    path("administration/", include("accounts.administration_urls")),
    path("audit/", include("audit.urls")),
    path("api/model-versions/agreement/", AgreementView.as_view(), name="api-model-version-agreement"),
    path("api/", include(router.urls)),
    path("api/auth/", include("accounts.api_urls")),
    # DICOMweb STOW-RS for systems that push chest radiographs over HTTP (token auth).
    path("dicomweb/studies", StowStudiesView.as_view(), name="dicomweb-stow-studies"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script from a URL, so the Content-Security-Policy needs no inline scripts.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Browsers ask for /favicon.ico on pages that name no icon (the API's JSON, a PDF).
    path("favicon.ico", favicon),
    # No Django admin: people and model versions change only through the audited administration pages.
]
