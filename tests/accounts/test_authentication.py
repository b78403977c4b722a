"""Sign-in: lockout, audit of every attempt, second factor, sessions, API tokens."""

import time

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.middleware import SESSION_LAST_SEEN_KEY, SESSION_STARTED_KEY
from accounts.roles import RoleName
from accounts.services import user_create
from audit.models import AuditEvent
from tests.factories import TEST_PASSWORD, UserFactory

WARD_ADDRESS = "10.20.30.40"


def current_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def post_login(client: Client, username: str, password: str, address: str = WARD_ADDRESS):
    return client.post(reverse("accounts:login"), {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_two_hundred_wrong_passwords_lock_the_account_audit_every_attempt_and_spare_the_ward(settings, clinician, second_clinician):
    attacker = Client()
    statuses = [post_login(attacker, "dr_ana", f"guess-{attempt}").status_code for attempt in range(200)]
    limit = settings.AXES_FAILURE_LIMIT
    assert statuses[: limit - 1] == [200] * (limit - 1)  # the form again, "do not match"
    assert set(statuses[limit:]) == {429}  # locked out
    assert AuditEvent.objects.filter(action="auth.login_failed", actor_username="dr_ana", outcome="denied").count() == 200
    assert AuditEvent.objects.filter(action="auth.lockout", actor_username="dr_ana").count() >= 1
    failed = AuditEvent.objects.filter(action="auth.login_failed").order_by("sequence")
    assert all(event.client_ip == WARD_ADDRESS for event in failed)
    assert failed.last().details == {"locked_out": True}

    # Even the right password is refused while the lockout lasts ...
    assert post_login(Client(), "dr_ana", TEST_PASSWORD).status_code == 429
    # ... but a colleague at the same computer signs in normally.
    colleague = Client()
    assert post_login(colleague, "dr_ben", TEST_PASSWORD).status_code == 302
    assert colleague.get(reverse("diagnosis:worklist")).status_code == 200


@pytest.mark.django_db
def test_lockout_ends_after_the_cool_off(settings, clinician):
    from axes.models import AccessAttempt

    for attempt in range(settings.AXES_FAILURE_LIMIT):
        post_login(Client(), "dr_ana", f"guess-{attempt}")
    assert post_login(Client(), "dr_ana", TEST_PASSWORD).status_code == 429
    # Age the lockout record past the cool-off (axes' own table, not the audit trail).
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.first().attempt_time - settings.AXES_COOLOFF_TIME * 2)
    assert post_login(Client(), "dr_ana", TEST_PASSWORD).status_code == 302


@pytest.mark.django_db
def test_api_token_endpoint_is_covered_by_the_same_lockout_and_audit(settings, clinician):
    api = APIClient(REMOTE_ADDR=WARD_ADDRESS)
    url = reverse("api-token")
    responses = [api.post(url, {"username": "dr_ana", "password": "wrong"}).status_code for _ in range(settings.AXES_FAILURE_LIMIT + 3)]
    assert responses[0] == 400 and responses[-1] == 429
    assert api.post(url, {"username": "dr_ana", "password": TEST_PASSWORD}).status_code == 429
    assert AuditEvent.objects.filter(action="auth.login_failed", actor_username="dr_ana").count() == settings.AXES_FAILURE_LIMIT + 4
    assert not Token.objects.filter(user=clinician).exists()


@pytest.mark.django_db
def test_api_token_is_per_user_audited_and_revocable(clinician, patient):
    api = APIClient()
    response = api.post(reverse("api-token"), {"username": "dr_ana", "password": TEST_PASSWORD})
    assert response.status_code == 200
    key = response.json()["token"]
    assert Token.objects.get(user=clinician).key == key
    assert AuditEvent.objects.filter(action="auth.token_issue", actor_username="dr_ana").count() == 1
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/patients/").status_code == 200
    assert api.delete(reverse("api-token")).status_code == 204
    assert AuditEvent.objects.filter(action="auth.token_revoke", actor_username="dr_ana").count() == 1
    assert api.get("/api/patients/").status_code == 401


@pytest.mark.django_db
def test_auditor_needs_a_totp_code_for_a_token(auditor):
    api = APIClient()
    url = reverse("api-token")
    assert api.post(url, {"username": auditor.username, "password": TEST_PASSWORD}).status_code == 403
    device = TOTPDevice.objects.create(user=auditor, name="phone", confirmed=True)
    response = api.post(url, {"username": auditor.username, "password": TEST_PASSWORD, "otp_token": current_code(device)})
    assert response.status_code == 200 and response.json()["token"]


@pytest.mark.django_db
def test_password_validators_require_twelve_characters_and_refuse_common_ones():
    with pytest.raises(ValidationError, match="at least 12"):
        user_create(username="short", role=RoleName.CLINICIAN, password="Xk3!pq")
    with pytest.raises(ValidationError, match="too common"):
        user_create(username="common", role=RoleName.CLINICIAN, password="password1234")
    assert user_create(username="fine", role=RoleName.CLINICIAN, password="a long unusual phrase 42").pk


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["administrator", "auditor"])
def test_administrators_and_auditors_must_enrol_and_use_totp(role):
    user = UserFactory(**{role: True})
    browser = Client()
    assert post_login(browser, user.username, TEST_PASSWORD).status_code == 302
    # Signed in with the password only: every page leads to the second factor.
    response = browser.get(reverse("diagnosis:model_versions"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:two_factor"))
    assert browser.get("/api/schema/").status_code == 403
    setup = browser.get(reverse("accounts:two_factor_setup"))
    assert setup.status_code == 200 and b"data-testid=\"totp-secret\"" in setup.content
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    confirmed = browser.post(reverse("accounts:two_factor_setup"),
                             {"token": current_code(device), "next": reverse("diagnosis:model_versions")})
    assert confirmed.status_code == 302 and confirmed["Location"] == reverse("diagnosis:model_versions")
    assert browser.get(reverse("diagnosis:model_versions")).status_code == 200
    assert AuditEvent.objects.filter(action="auth.two_factor_enrol", actor_username=user.username).count() == 1

    # Next sign-in asks for a code from the enrolled device.
    browser.post(reverse("accounts:logout"))
    post_login(browser, user.username, TEST_PASSWORD)
    assert browser.get(reverse("diagnosis:model_versions"))["Location"].startswith(reverse("accounts:two_factor"))
    wrong = "000000" if current_code(device) != "000000" else "111111"
    assert browser.post(reverse("accounts:two_factor"), {"token": wrong}).status_code == 400
    assert browser.get(reverse("diagnosis:model_versions")).status_code == 302
    assert AuditEvent.objects.filter(action="auth.two_factor_verify", actor_username=user.username, outcome="denied").count() == 1


@pytest.mark.django_db
def test_clinicians_need_no_second_factor(clinician):
    browser = Client()
    post_login(browser, "dr_ana", TEST_PASSWORD)
    assert browser.get(reverse("diagnosis:worklist")).status_code == 200


@pytest.mark.django_db
def test_logout_deletes_the_session_on_the_server(clinician):
    browser = Client()
    post_login(browser, "dr_ana", TEST_PASSWORD)
    stolen_cookie = browser.cookies["sessionid"].value
    browser.post(reverse("accounts:logout"))
    thief = Client()
    thief.cookies["sessionid"] = stolen_cookie
    assert thief.get(reverse("diagnosis:worklist")).status_code == 302
    assert AuditEvent.objects.filter(action="auth.logout", actor_username="dr_ana").count() == 1


def age_session(client: Client, key: str, seconds: float) -> None:
    session = client.session
    session[key] = time.time() - seconds
    session.save()


@pytest.mark.django_db
@pytest.mark.parametrize("key,setting", [(SESSION_LAST_SEEN_KEY, "SESSION_IDLE_TIMEOUT_SECONDS"),
                                         (SESSION_STARTED_KEY, "SESSION_ABSOLUTE_LIFETIME_SECONDS")],
                         ids=["idle-timeout", "absolute-lifetime"])
def test_sessions_expire_on_the_server(settings, clinician, key, setting):
    browser = Client()
    post_login(browser, "dr_ana", TEST_PASSWORD)
    assert browser.get(reverse("diagnosis:worklist")).status_code == 200
    cookie = browser.cookies["sessionid"].value
    age_session(browser, key, getattr(settings, setting) + 5)
    response = browser.get(reverse("diagnosis:worklist"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:login"))
    replay = Client()
    replay.cookies["sessionid"] = cookie
    assert replay.get(reverse("diagnosis:worklist")).status_code == 302


@pytest.mark.django_db
def test_second_factor_never_redirects_off_site(auditor):
    device = TOTPDevice.objects.create(user=auditor, name="phone", confirmed=True)
    browser = Client()
    post_login(browser, auditor.username, TEST_PASSWORD)
    response = browser.post(reverse("accounts:two_factor"), {"token": current_code(device), "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == reverse("diagnosis:home")


@pytest.mark.django_db
@pytest.mark.parametrize("role,asked,landing", [
    ("administrator", "/worklist/", "/models/"),
    ("administrator", "/administration/users/", "/administration/users/"),
    ("auditor", "/administration/users/", "/worklist/"),
    ("auditor", "/audit/events/", "/audit/events/"),
])
def test_sign_in_lands_on_next_only_when_the_role_may_open_it(role, asked, landing):
    user = UserFactory(**{role: True})
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    browser = Client()
    # Log out leads to the bare sign-in page; the second factor then carries the default landing on.
    response = browser.post(f"{reverse('accounts:login')}?next={asked}",
                            {"username": user.username, "password": TEST_PASSWORD, "next": asked})
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:two_factor"))
    response = browser.post(response["Location"], {"token": current_code(device), "next": asked})
    assert response.status_code == 302
    final = browser.get(response["Location"], follow=True)
    assert final.status_code == 200
    assert (final.redirect_chain[-1][0] if final.redirect_chain else response["Location"]) == landing
    assert not AuditEvent.objects.filter(actor_username=user.username, outcome="denied").exists()


@pytest.mark.django_db
def test_administrator_signing_in_from_the_bare_login_page_reaches_the_model_page_without_a_refusal():
    user = UserFactory(administrator=True)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    browser = Client()
    first = post_login(browser, user.username, TEST_PASSWORD)
    second = browser.post(first["Location"], {"token": current_code(device)}, follow=True)
    assert second.status_code == 200
    assert second.redirect_chain[-1][0] == reverse("diagnosis:model_versions")
    assert not AuditEvent.objects.filter(action="study.list", actor_username=user.username).exists()


@pytest.mark.django_db
def test_clinician_asking_for_the_audit_log_lands_on_the_worklist(clinician):
    browser = Client()
    response = browser.post(reverse("accounts:login"), {"username": "dr_ana", "password": TEST_PASSWORD,
                                                        "next": reverse("audit:event_list")})
    assert response["Location"] == reverse("diagnosis:home")
    assert not AuditEvent.objects.filter(actor_username="dr_ana", outcome="denied").exists()
