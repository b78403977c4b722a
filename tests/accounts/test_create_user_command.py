import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from accounts.roles import Capability, user_can
from audit.models import AuditEvent


@pytest.mark.django_db
def test_creates_user_with_role_and_audits_it():
    call_command("create_user", "nurse_kim", "--role", "clinician", "--password", "a-long-enough-passphrase")
    user = User.objects.get(username="nurse_kim")
    assert user.role_name == "clinician"
    assert user.check_password("a-long-enough-passphrase")
    assert user_can(user, Capability.EDIT_CLINICAL)
    assert not user_can(user, Capability.MANAGE_USERS)
    assert AuditEvent.objects.filter(action="user.create", object_id=str(user.id)).count() == 1


@pytest.mark.django_db
def test_rejects_weak_password_and_duplicate_user():
    with pytest.raises(CommandError, match="too short|too common"):
        call_command("create_user", "weak", "--role", "auditor", "--password", "abc")
    assert not User.objects.filter(username="weak").exists()
    call_command("create_user", "dup", "--role", "auditor", "--password", "a-long-enough-passphrase")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "dup", "--role", "auditor", "--password", "a-long-enough-passphrase")


@pytest.mark.django_db
def test_inactive_user_can_do_nothing():
    call_command("create_user", "gone", "--role", "administrator", "--password", "a-long-enough-passphrase")
    user = User.objects.get(username="gone")
    user.is_active = False
    assert not any(user_can(user, capability) for capability in Capability)
