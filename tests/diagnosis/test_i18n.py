"""Languages: the user picks English or Spanish; pages and the PDF report follow."""

import io

import pytest
from django.conf import settings
from django.urls import reverse


@pytest.mark.django_db
def test_language_picker_switches_the_interface_to_spanish_and_back(client, clinician):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert '<html lang="en">' in page and 'data-testid="language-picker"' in page

    response = client.post(reverse("set_language"), {"language": "es", "next": reverse("diagnosis:worklist")})
    assert response.status_code == 302 and response["Location"] == reverse("diagnosis:worklist")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "es"
    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert '<html lang="es">' in page

    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert '<html lang="en">' in client.get(reverse("diagnosis:worklist")).content.decode()


@pytest.mark.django_db
def test_anonymous_visitor_can_pick_a_language_on_the_sign_in_page(client):
    page = client.get(reverse("accounts:login")).content.decode()
    assert 'data-testid="language-picker"' in page
    response = client.post(reverse("set_language"), {"language": "es", "next": reverse("accounts:login")})
    assert response.status_code == 302
    assert '<html lang="es">' in client.get(reverse("accounts:login")).content.decode()


@pytest.mark.django_db
def test_unknown_language_is_ignored(client, clinician):
    client.force_login(clinician)
    client.post(reverse("set_language"), {"language": "xx", "next": "/"})
    assert '<html lang="en">' in client.get(reverse("diagnosis:worklist")).content.decode()
