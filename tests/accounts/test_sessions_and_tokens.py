"""Sessions end on deactivation and password changes; API tokens expire, rotate and show their last use;
the API's lockout answers JSON; token sign-ins count like page sign-ins; one address cannot spray passwords."""

import datetime

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import ApiTokenUse
from accounts.services import user_deactivate, user_reactivate, user_reset_password
from tests.factories import TEST_PASSWORD, UserFactory

WARD_ADDRESS = "10.20.30.40"


def signed_in(username: str) -> Client:
    client = Client()
    response = client.post(reverse("accounts:login"), {"username": username, "password": TEST_PASSWORD}, REMOTE_ADDR=WARD_ADDRESS)
    assert response.status_code == 302
    return client


def sessions_of(user) -> list[Session]:
    return [session for session in Session.objects.all() if session.get_decoded().get("_auth_user_id") == str(user.pk)]


def token_request(api: APIClient, username: str, password: str, address: str = WARD_ADDRESS):
    return api.post(reverse("api-token"), {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_deactivation_deletes_sessions_so_reactivation_revives_no_cookie(clinician, administrator):
    browser = signed_in("dr_ana")
    assert sessions_of(clinician)
    user_deactivate(actor=administrator, user=clinician)
    assert sessions_of(clinician) == []
    user_reactivate(actor=administrator, user=clinician)
    assert browser.get(reverse("diagnosis:worklist")).status_code == 302


@pytest.mark.django_db
def test_password_reset_deletes_sessions_and_token(clinician, administrator):
    signed_in("dr_ana")
    Token.objects.create(user=clinician)
    user_reset_password(actor=administrator, user=clinician, password="a-brand-new-passphrase")
    assert sessions_of(clinician) == [] and not Token.objects.filter(user=clinician).exists()


@pytest.mark.django_db
def test_any_password_change_deletes_sessions(clinician, second_clinician):
    signed_in("dr_ana")
    colleague = signed_in("dr_ben")
    clinician.set_password("changed-by-manage-py-changepassword")
    clinician.save()
    assert sessions_of(clinician) == []
    assert colleague.get(reverse("diagnosis:worklist")).status_code == 200


@pytest.mark.django_db
def test_asking_again_rotates_the_token(clinician):
    api = APIClient()
    first = token_request(api, "dr_ana", TEST_PASSWORD).json()
    second = token_request(api, "dr_ana", TEST_PASSWORD).json()
    assert first["token"] != second["token"] and "expires_at" in second
    api.credentials(HTTP_AUTHORIZATION=f"Token {first['token']}")
    assert api.get("/api/patients/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Token {second['token']}")
    assert api.get("/api/patients/").status_code == 200


@pytest.mark.django_db
def test_tokens_expire_after_the_configured_lifetime(clinician, settings):
    settings.API_TOKEN_LIFETIME = datetime.timedelta(hours=1)
    key = token_request(APIClient(), "dr_ana", TEST_PASSWORD).json()["token"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/patients/").status_code == 200
    Token.objects.filter(key=key).update(created=Token.objects.get(key=key).created - datetime.timedelta(hours=2))
    expired = api.get("/api/patients/")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


@pytest.mark.django_db
def test_last_use_is_recorded_and_shown_to_administrators(clinician, admin_client):
    key = token_request(APIClient(), "dr_ana", TEST_PASSWORD).json()["token"]
    page = admin_client.get(reverse("administration:user_detail", args=[clinician.id])).content.decode()
    assert "never used" in page and "expires" in page
    api = APIClient(REMOTE_ADDR="10.9.9.9")
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    api.get("/api/patients/")
    use = ApiTokenUse.objects.get(token__key=key)
    assert use.last_used_from == "10.9.9.9"
    page = admin_client.get(reverse("administration:user_detail", args=[clinician.id])).content.decode()
    assert "last used" in page and "10.9.9.9" in page


@pytest.mark.django_db
def test_api_lockout_is_json_429_with_retry_after(clinician, settings):
    api = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        token_request(api, "dr_ana", "wrong")
    locked = token_request(api, "dr_ana", TEST_PASSWORD)
    assert locked.status_code == 429 and locked["Content-Type"] == "application/json"
    assert "Too many failed sign-in attempts" in locked.json()["detail"]
    assert int(locked["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())


@pytest.mark.django_db
def test_a_successful_token_sign_in_resets_the_failure_count_like_login(clinician, settings):
    api = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert token_request(api, "dr_ana", "wrong").status_code == 400
    assert token_request(api, "dr_ana", TEST_PASSWORD).status_code == 200
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert token_request(api, "dr_ana", "wrong").status_code == 400
    assert token_request(api, "dr_ana", TEST_PASSWORD).status_code == 200


@pytest.mark.django_db
def test_password_spraying_from_one_address_is_refused(clinician, settings):
    settings.LOGIN_ADDRESS_USERNAME_LIMIT = 5
    sprayer = "10.66.66.66"
    for number in range(5):
        UserFactory(username=f"nurse_{number}")
        response = Client().post(reverse("accounts:login"), {"username": f"nurse_{number}", "password": "Winter2026!"},
                                 REMOTE_ADDR=sprayer)
        assert response.status_code == 200  # the form again, "do not match"
    # Now even a right password from that address is refused, on the page and the API ...
    page = Client().post(reverse("accounts:login"), {"username": "dr_ana", "password": TEST_PASSWORD}, REMOTE_ADDR=sprayer)
    assert page.status_code == 429
    api = token_request(APIClient(), "dr_ana", TEST_PASSWORD, address=sprayer)
    assert api.status_code == 429 and api["Content-Type"] == "application/json"
    # ... while the same user signs in from elsewhere.
    assert token_request(APIClient(), "dr_ana", TEST_PASSWORD, address="10.1.2.3").status_code == 200


@pytest.mark.django_db
def test_one_users_typos_do_not_lock_the_ward_address(clinician, second_clinician, settings):
    settings.LOGIN_ADDRESS_USERNAME_LIMIT = 2
    for attempt in range(10):
        Client().post(reverse("accounts:login"), {"username": "dr_ana", "password": f"typo-{attempt}"}, REMOTE_ADDR=WARD_ADDRESS)
    assert signed_in("dr_ben")


@pytest.mark.django_db
def test_every_api_door_uses_the_expiring_token():
    """A door with DRF's plain TokenAuthentication would accept expired tokens."""
    from django.urls import get_resolver
    from rest_framework.authentication import TokenAuthentication

    from accounts.authentication import ExpiringTokenAuthentication

    def views(patterns):
        for pattern in patterns:
            if hasattr(pattern, "url_patterns"):
                yield from views(pattern.url_patterns)
            else:
                yield pattern.callback

    for callback in views(get_resolver().url_patterns):
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        for authentication in getattr(view_class, "authentication_classes", []) or []:
            if issubclass(authentication, TokenAuthentication):
                assert issubclass(authentication, ExpiringTokenAuthentication), view_class
