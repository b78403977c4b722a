import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from accounts.roles import Capability, user_can
from audit.models import AuditEvent


@pytest.mark.django_db
def test_creates_user_with_role_and_audits_it():
    call_command("create_user", "nurse_kim", "--role", "clinician", "--password-stdin", stdin=io.StringIO("a-long-enough-passphrase" + "\n"))
    user = User.objects.get(username="nurse_kim")
    assert user.role_name == "clinician"
    assert user.check_password("a-long-enough-passphrase")
    assert user_can(user, Capability.EDIT_CLINICAL)
    assert not user_can(user, Capability.MANAGE_USERS)
    assert AuditEvent.objects.filter(action="user.create", object_id=str(user.id)).count() == 1


@pytest.mark.django_db
def test_rejects_weak_password_and_duplicate_user():
    with pytest.raises(CommandError, match="too short|too common"):
        call_command("create_user", "weak", "--role", "auditor", "--password-stdin", stdin=io.StringIO("abc" + "\n"))
    assert not User.objects.filter(username="weak").exists()
    call_command("create_user", "dup", "--role", "auditor", "--password-stdin", stdin=io.StringIO("a-long-enough-passphrase" + "\n"))
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "dup", "--role", "auditor", "--password-stdin", stdin=io.StringIO("a-long-enough-passphrase" + "\n"))


@pytest.mark.django_db
def test_inactive_user_can_do_nothing():
    call_command("create_user", "gone", "--role", "administrator", "--password-stdin", stdin=io.StringIO("a-long-enough-passphrase" + "\n"))
    user = User.objects.get(username="gone")
    user.is_active = False
    assert not any(user_can(user, capability) for capability in Capability)


@pytest.mark.django_db
def test_password_is_not_accepted_on_the_command_line():
    with pytest.raises(CommandError, match="unrecognized arguments"):
        call_command("create_user", "argv_user", "--role", "clinician", "--password", "a-long-enough-passphrase")
    assert not User.objects.filter(username="argv_user").exists()


@pytest.mark.django_db
def test_password_is_prompted_for_twice_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    answers = iter(["a-long-enough-passphrase", "a-long-enough-passphrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    call_command("create_user", "prompted", "--role", "clinician", stdin=Terminal())
    assert User.objects.get(username="prompted").check_password("a-long-enough-passphrase")
    answers = iter(["a-long-enough-passphrase", "a-different-passphrase"])
    with pytest.raises(CommandError, match="differ"):
        call_command("create_user", "mistyped", "--role", "clinician", stdin=Terminal())


@pytest.mark.django_db
def test_without_a_terminal_or_stdin_flag_it_asks_for_stdin():
    with pytest.raises(CommandError, match="--password-stdin"):
        call_command("create_user", "scripted", "--role", "clinician", stdin=io.StringIO("secret\n"))
