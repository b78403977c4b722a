"""Every route, every method, every kind of user: the outcome must be the one in authorization_matrix.py."""

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from diagnosis.models import Study
from diagnosis.services.ingest import study_create
from tests import images
from tests.conftest import TwoFactorClient
from tests.factories import UserFactory
from tests.security.authorization_matrix import MATRIX, ROLES, Row
from tests.security.records import make_alert, make_model_version, make_prediction

IGNORED_METHODS = {"options", "head", "trace"}


def project_routes() -> list[tuple[str, URLPattern]]:
    """(route, pattern) for every URL pattern the project serves, includes flattened."""

    def walk(patterns, prefix: str):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    return list(walk(get_resolver().url_patterns, ""))


def required_methods(pattern: URLPattern) -> set[str]:
    """Methods a route must have rows for. DRF views say which they serve; a plain Django view needs at least one row."""
    callback = pattern.callback
    if getattr(callback, "actions", None):
        # DRF adds "head" to this dict once a GET has been served; HEAD follows GET's rules.
        return {method.upper() for method in callback.actions if method not in IGNORED_METHODS}
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view_class is not None and hasattr(view_class, "http_method_names") and getattr(callback, "cls", None):
        return {method.upper() for method in view_class.http_method_names
                if method not in IGNORED_METHODS and hasattr(view_class, method)}
    return set()


def missing_rows() -> list[str]:
    """The rows to add, one line each, ready to paste into the table."""
    rows = {(row.route, row.method) for row in MATRIX}
    routes_in_table = {row.route for row in MATRIX}
    missing = []
    for route, pattern in project_routes():
        methods = sorted(required_methods(pattern)) if route in routes_in_table else sorted(required_methods(pattern) or {"GET"})
        for method in methods:
            if (route, method) not in rows:
                missing.append(f'    R("{route}", "{method}", "/{route}", anonymous, clinician, second_clinician, administrator, auditor),'
                               f"  # name={pattern.name!r}")
    return missing


def test_every_route_and_api_operation_has_a_row():
    missing = missing_rows()
    assert not missing, (
        "These routes have no row in tests/security/authorization_matrix.py; add one row per method with the expected "
        "status for each user (url with {patient}/{study}/{alert}/{user}/{model_version} placeholders):\n" + "\n".join(missing)
    )


def test_a_new_route_without_a_row_is_named_in_the_failure(settings):
    """What a colleague sees when they add a page and forget the table."""
    import types

    from django.http import HttpResponse
    from django.urls import clear_url_caches, include, path

    import cxr_portal.urls

    urlconf = types.ModuleType("urls_with_a_new_route")
    urlconf.urlpatterns = [*cxr_portal.urls.urlpatterns,
                           path("reports/", include(([path("<int:report_id>/share/", lambda request: HttpResponse(), name="share")], "reports")))]
    settings.ROOT_URLCONF = urlconf
    clear_url_caches()
    try:
        assert missing_rows() == [
            '    R("reports/<int:report_id>/share/", "GET", "/reports/<int:report_id>/share/", anonymous, clinician, '
            "second_clinician, administrator, auditor),  # name='share'"
        ]
    finally:
        clear_url_caches()


def test_no_row_names_a_route_that_does_not_exist():
    routes = {route for route, _pattern in project_routes()}
    stale = sorted({row.route for row in MATRIX} - routes)
    assert not stale, f"Remove these rows from tests/security/authorization_matrix.py, their routes are gone: {stale}"


def test_rows_are_unique():
    keys = [(row.route, row.method) for row in MATRIX]
    assert len(keys) == len(set(keys)), "a (route, method) appears twice in the matrix"


def form_value(value: str, records: dict):
    if value == "<png>":
        from django.core.files.uploadedfile import SimpleUploadedFile

        return SimpleUploadedFile("chest.png", images.png_bytes(images.gradient(seed=7)), content_type="image/png")
    return value.format(**records)


@pytest.fixture
def records(db, clinician, queued_inference):
    from tests.factories import PatientFactory

    patient = PatientFactory(mrn="MRN-MATRIX")
    study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(), accession_number="ACC-MATRIX")
    prediction = make_prediction(study, make_model_version("matrix-active", status="active"), covid=0.9)
    Study.objects.filter(id=study.id).update(status="completed")
    alert = make_alert(prediction)
    return {
        "patient": patient.id,
        "study": study.id,
        "alert": alert.id,
        "user": UserFactory(username="matrix_subject", clinician=True).id,
        "model_version": make_model_version("matrix-candidate", status="candidate").id,
    }


@pytest.fixture
def as_role(db, clinician, second_clinician, administrator, auditor):
    users = {"clinician": clinician, "second_clinician": second_clinician, "administrator": administrator, "auditor": auditor}

    def make(role: str) -> Client:
        if role == "anonymous":
            return Client()
        client = TwoFactorClient()
        client.force_login(users[role])
        return client

    return make


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", MATRIX, ids=lambda row: f"{row.method} {row.route or '/'}")
def test_route_outcome(row: Row, role: str, records, as_role):
    client = as_role(role)
    url = row.url.format(**records)
    if row.method == "POST":
        response = client.post(url, {name: form_value(value, records) for name, value in row.data})
    else:
        response = getattr(client, row.method.lower())(url)
    expected = row.expected(role)
    assert response.status_code == expected, f"{row.method} {url} as {role}: got {response.status_code}, table says {expected}"
    # Sign-in pages and the language picker redirect anonymous users elsewhere than the sign-in page.
    if role == "anonymous" and expected == 302 and not row.route.startswith(("accounts/", "i18n/")):
        assert response["Location"].startswith("/accounts/login/")


# Rows with a clinical record's id in the path (a list filtered by ids in the query string just returns fewer rows).
OBJECT_ROWS = [row for row in MATRIX if "{" in row.url.split("?")[0] and "{user}" not in row.url and "{model_version}" not in row.url]


@pytest.mark.django_db
@pytest.mark.parametrize("role", [role for role in ROLES if role != "anonymous"])
@pytest.mark.parametrize("row", OBJECT_ROWS, ids=lambda row: f"{row.method} {row.route}")
def test_ids_of_records_that_do_not_exist_or_are_not_yours_give_403_or_404(row: Row, role: str, records, as_role):
    """An unknown id must not be told apart from a forbidden one by a role that may not see the record."""
    url = row.url.format(**{name: 987654 for name in records})
    client = as_role(role)
    response = client.post(url, {name: form_value(value, records) for name, value in row.data}) if row.method == "POST" else client.get(url)
    assert response.status_code in (403, 404)
    if row.expected(role) == 403:
        assert response.status_code == 403, "a refused role must get 403 whether or not the record exists"
