"""Administrators manage people and their access; each change writes exactly one complete audit event."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from accounts.models import User
from audit.models import AuditEvent
from tests.conftest import only_event
from tests.factories import TEST_PASSWORD, UserFactory

NEW_PASSWORD = "a different long phrase 77"


def assert_complete(event: AuditEvent, *, actor: User, target: User | None = None) -> None:
    assert event.actor_id == actor.id
    assert event.actor_username == actor.username and event.actor_role == actor.role_name
    assert event.outcome == "success"
    assert event.client_ip == "127.0.0.1"
    assert event.created_at.utcoffset().total_seconds() == 0
    assert len(event.hash) == 64 and len(event.previous_hash) == 64
    if target is not None:
        assert (event.object_type, event.object_id) == ("accounts.user", str(target.id))


@pytest.mark.django_db
def test_user_list_shows_role_last_login_and_lock_status(admin_client, clinician, settings):
    from axes.models import AccessAttempt

    AccessAttempt.objects.create(username="dr_ana", ip_address="10.1.1.1", failures_since_start=settings.AXES_FAILURE_LIMIT,
                                 user_agent="", path_info="/accounts/login/", get_data="", post_data="")
    page = admin_client.get(reverse("administration:user_list")).content.decode()
    assert "dr_ana" in page and "clinician" in page and 'data-testid="locked"' in page
    only_event("user.list")


@pytest.mark.django_db
def test_create_user_with_role(admin_client, administrator):
    response = admin_client.post(reverse("administration:user_create"), {
        "username": "dr_new", "first_name": "Nora", "last_name": "Diaz", "email": "nora@hospital.test",
        "role": "auditor", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    user = User.objects.get(username="dr_new")
    assert response.status_code == 302 and user.role_name == "auditor" and user.check_password(NEW_PASSWORD)
    event = only_event("user.create")
    assert_complete(event, actor=administrator, target=user)
    assert event.details["role"] == "auditor"


@pytest.mark.django_db
def test_create_user_refuses_a_weak_password(admin_client):
    response = admin_client.post(reverse("administration:user_create"), {
        "username": "dr_weak", "role": "clinician", "password1": "short", "password2": "short"})
    assert response.status_code == 400 and not User.objects.filter(username="dr_weak").exists()
    assert not AuditEvent.objects.filter(action="user.create").exists()


@pytest.mark.django_db
def test_change_role_records_old_and_new(admin_client, administrator, clinician):
    response = admin_client.post(reverse("administration:user_set_role", args=[clinician.id]), {"role": "auditor"})
    assert response.status_code == 302
    clinician.refresh_from_db()
    assert clinician.role_name == "auditor"
    event = only_event("user.role_change")
    assert_complete(event, actor=administrator, target=clinician)
    assert event.details["old"] == {"role": "clinician"} and event.details["new"] == {"role": "auditor"}


@pytest.mark.django_db
def test_administrator_cannot_demote_or_deactivate_themselves(admin_client, administrator):
    admin_client.post(reverse("administration:user_set_role", args=[administrator.id]), {"role": "clinician"})
    admin_client.post(reverse("administration:user_deactivate", args=[administrator.id]))
    administrator.refresh_from_db()
    assert administrator.role_name == "administrator" and administrator.is_active
    assert not AuditEvent.objects.filter(action__in=["user.role_change", "user.deactivate"]).exists()


@pytest.mark.django_db
def test_deactivate_ends_sessions_and_tokens_and_reactivate_restores(admin_client, administrator, clinician, client):
    from django.test import Client

    clinician_browser = Client()
    clinician_browser.force_login(clinician)
    Token.objects.create(user=clinician)
    admin_client.post(reverse("administration:user_deactivate", args=[clinician.id]))
    clinician.refresh_from_db()
    assert not clinician.is_active and not Token.objects.filter(user=clinician).exists()
    assert clinician_browser.get(reverse("diagnosis:worklist")).status_code == 302
    event = only_event("user.deactivate")
    assert_complete(event, actor=administrator, target=clinician)
    assert event.details["old"] == {"is_active": True} and event.details["new"] == {"is_active": False}

    admin_client.post(reverse("administration:user_reactivate", args=[clinician.id]))
    clinician.refresh_from_db()
    assert clinician.is_active
    assert_complete(only_event("user.reactivate"), actor=administrator, target=clinician)


@pytest.mark.django_db
def test_reset_password_audits_without_the_password(admin_client, administrator, clinician):
    response = admin_client.post(reverse("administration:user_reset_password", args=[clinician.id]),
                                 {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    clinician.refresh_from_db()
    assert clinician.check_password(NEW_PASSWORD)
    event = only_event("user.password_reset")
    assert_complete(event, actor=administrator, target=clinician)
    assert NEW_PASSWORD not in str(event.details)


@pytest.mark.django_db
def test_unlock_clears_the_lockout(admin_client, administrator, clinician, settings):
    from django.test import Client

    for attempt in range(settings.AXES_FAILURE_LIMIT):
        Client().post(reverse("accounts:login"), {"username": "dr_ana", "password": f"wrong{attempt}"})
    assert Client().post(reverse("accounts:login"), {"username": "dr_ana", "password": TEST_PASSWORD}).status_code == 429
    admin_client.post(reverse("administration:user_unlock", args=[clinician.id]))
    assert Client().post(reverse("accounts:login"), {"username": "dr_ana", "password": TEST_PASSWORD}).status_code == 302
    assert_complete(only_event("user.unlock"), actor=administrator, target=clinician)


@pytest.mark.django_db
def test_two_factor_reset_and_token_revoke(admin_client, administrator, auditor):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=auditor, name="phone", confirmed=True)
    Token.objects.create(user=auditor)
    admin_client.post(reverse("administration:user_two_factor_reset", args=[auditor.id]))
    admin_client.post(reverse("administration:user_token_revoke", args=[auditor.id]))
    assert not TOTPDevice.objects.filter(user=auditor).exists() and not Token.objects.filter(user=auditor).exists()
    assert_complete(only_event("user.two_factor_reset"), actor=administrator, target=auditor)
    assert_complete(only_event("auth.token_revoke"), actor=administrator, target=auditor)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["clinician", "auditor"])
def test_other_roles_cannot_manage_users(client, role):
    user = UserFactory(**{role: True})
    victim = UserFactory(clinician=True)
    client.force_login(user)
    assert client.get(reverse("administration:user_list")).status_code == 403
    assert client.post(reverse("administration:user_deactivate", args=[victim.id])).status_code == 403
    victim.refresh_from_db()
    assert victim.is_active
    assert AuditEvent.objects.filter(action="user.deactivate", outcome="denied", actor_username=user.username).count() == 1


def queries_for(client, url) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # the first request of a session also saves its start time
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.django_db
def test_user_list_query_count_does_not_grow_with_users(admin_client):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    def add_users(start: int, count: int) -> None:
        for number in range(start, start + count):
            user = UserFactory(username=f"staff{number}", auditor=number % 2 == 0)
            TOTPDevice.objects.create(user=user, name="phone", confirmed=True)

    add_users(0, 2)
    few = queries_for(admin_client, reverse("administration:user_list"))
    add_users(2, 12)
    assert queries_for(admin_client, reverse("administration:user_list")) == few
