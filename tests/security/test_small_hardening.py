"""Smaller findings of the security test: NUL characters, the PDF's escaping, headers on static files,
and which proxy header production trusts."""

import io
import json
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse
from pypdf import PdfReader
from rest_framework.test import APIClient

from diagnosis.models import Patient
from tests.diagnosis import factories
from tests.security.test_deployment import PROJECT_ROOT, production_environment


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/patients/?q=%00", "/api/studies/?status=%00", "/api/studies/?q=a%00b",
                                 "/api/patients/?q%00=1"])
def test_nul_in_an_api_query_parameter_is_a_400(clinician, url):
    api = APIClient()
    api.force_authenticate(clinician)
    response = api.get(url)
    assert response.status_code == 400 and "NUL" in response.json()["detail"]


@pytest.mark.django_db
def test_nul_in_a_page_query_parameter_is_a_400(client, clinician):
    client.force_login(clinician)
    assert client.get(reverse("diagnosis:worklist"), {"q": "a\x00b"}).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["username", "password"])
def test_nul_in_a_json_body_is_a_400(clinician, field):
    body = {"username": "dr_ana", "password": "whatever-it-is", field: "a\u0000b"}
    response = Client().post("/api/auth/token/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "NUL" in response.json()["detail"]


@pytest.mark.django_db
def test_nul_in_a_form_field_is_a_400():
    response = Client().post(reverse("accounts:login"), data="username=a%00b&password=x",
                             content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


@pytest.mark.django_db
def test_pdf_prints_an_ampersand_once_escaped(client, clinician, monkeypatch):
    patient = Patient.objects.create(mrn="MRN-AMP", name="Smith & Jones <Jr>")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    client.force_login(clinician)
    response = client.get(reverse("diagnosis:study_report", args=[study.id]))
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Smith & Jones <Jr>" in text and "&amp;" not in text and "&lt;" not in text


def test_static_files_carry_csp_and_frame_options(settings):
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    response = Client().get("/static/css/portal.css")
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"


def proxy_header(**environment) -> object:
    code = "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps(s.SECURE_PROXY_SSL_HEADER))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=production_environment(**environment),
                            capture_output=True, text=True, timeout=120)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_production_trusts_x_forwarded_proto_only_when_told_the_proxy_sets_it():
    assert proxy_header() is None
    assert proxy_header(CXR_TRUST_X_FORWARDED_PROTO="true") == ["HTTP_X_FORWARDED_PROTO", "https"]
