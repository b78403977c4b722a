"""Changes to people and their access. Each writes its audit event in the same transaction."""

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token

from audit.models import Outcome
from audit.services import audit_record

from .models import Role, User
from .roles import RoleName


@transaction.atomic
def user_create(
    *,
    username: str,
    role: RoleName,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    actor: User | None = None,
    validate: bool = True,
) -> User:
    user = User(username=username, email=email, first_name=first_name, last_name=last_name)
    user.role = Role.objects.get(name=RoleName(role).value)
    if validate:
        validate_password(password, user=user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    audit_record(
        actor=actor,
        action="user.create",
        target=user,
        details={"username": username, "role": user.role.name, "email": email},
    )
    return user


def _refuse_on_self(*, actor: User, user: User, what: str) -> None:
    # An administrator who locks themselves out may leave nobody able to manage users.
    if actor is not None and actor.pk == user.pk:
        raise ValidationError(_("You cannot %(what)s your own account.") % {"what": what})


@transaction.atomic
def user_set_role(*, actor: User, user: User, role: RoleName) -> User:
    _refuse_on_self(actor=actor, user=user, what=_("change the role of"))
    old_role = user.role_name
    user.role = Role.objects.get(name=RoleName(role).value)
    user.save(update_fields=["role"])
    audit_record(actor=actor, action="user.role_change", target=user,
                 details={"username": user.username, "old": {"role": old_role}, "new": {"role": user.role.name}})
    return user


@transaction.atomic
def user_deactivate(*, actor: User, user: User) -> User:
    """Sign the user out everywhere: inactive users fail session and token authentication; the token is deleted too."""
    _refuse_on_self(actor=actor, user=user, what=_("deactivate"))
    was_active = user.is_active
    user.is_active = False
    user.save(update_fields=["is_active"])
    Token.objects.filter(user=user).delete()
    audit_record(actor=actor, action="user.deactivate", target=user,
                 details={"username": user.username, "old": {"is_active": was_active}, "new": {"is_active": False}})
    return user


@transaction.atomic
def user_reactivate(*, actor: User, user: User) -> User:
    was_active = user.is_active
    user.is_active = True
    user.save(update_fields=["is_active"])
    audit_record(actor=actor, action="user.reactivate", target=user,
                 details={"username": user.username, "old": {"is_active": was_active}, "new": {"is_active": True}})
    return user


@transaction.atomic
def user_reset_password(*, actor: User, user: User, password: str) -> User:
    """Set a new password. Changing the password hash ends the user's other sessions; their API token goes too."""
    validate_password(password, user=user)
    user.set_password(password)
    user.save(update_fields=["password"])
    Token.objects.filter(user=user).delete()
    _axes_reset(user.username)
    # The password itself never enters the audit trail.
    audit_record(actor=actor, action="user.password_reset", target=user, details={"username": user.username})
    return user


def _axes_reset(username: str) -> int:
    from axes.utils import reset

    return reset(username=username)


@transaction.atomic
def user_unlock(*, actor: User, user: User) -> int:
    cleared = _axes_reset(user.username)
    audit_record(actor=actor, action="user.unlock", target=user,
                 details={"username": user.username, "lockout_records_cleared": cleared})
    return cleared


@transaction.atomic
def user_two_factor_reset(*, actor: User, user: User) -> int:
    """For a lost phone: the user enrols a new authenticator at their next sign-in."""
    removed, _details = TOTPDevice.objects.filter(user=user).delete()
    audit_record(actor=actor, action="user.two_factor_reset", target=user,
                 details={"username": user.username, "devices_removed": removed})
    return removed


@transaction.atomic
def totp_device_start(*, user: User) -> TOTPDevice:
    """An unconfirmed authenticator for the user to scan; it counts only after one correct code."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name=f"{settings.OTP_TOTP_ISSUER} ({user.username})", confirmed=False)


@transaction.atomic
def totp_device_confirm(*, user: User, device: TOTPDevice, token: str) -> bool:
    verified = device.verify_token(token)
    if verified:
        device.confirmed = True
        device.save(update_fields=["confirmed"])
    audit_record(actor=user, action="auth.two_factor_enrol", target=user,
                 outcome=Outcome.SUCCESS if verified else Outcome.DENIED)
    return verified


def two_factor_device_for(*, user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


@transaction.atomic
def two_factor_verify(*, user: User, token: str) -> TOTPDevice | None:
    """The user's confirmed device if the code is right (django-otp throttles repeated failures)."""
    device = two_factor_device_for(user=user)
    verified = device is not None and device.verify_token(token)
    audit_record(actor=user, action="auth.two_factor_verify", target=user,
                 outcome=Outcome.SUCCESS if verified else Outcome.DENIED)
    return device if verified else None


@transaction.atomic
def api_token_issue(*, user: User) -> Token:
    """One token per user; asking again returns the same one until it is revoked."""
    token, created = Token.objects.get_or_create(user=user)
    audit_record(actor=user, action="auth.token_issue", target=user, details={"new_token": created})
    return token


@transaction.atomic
def api_token_revoke(*, actor: User, user: User) -> bool:
    revoked, _details = Token.objects.filter(user=user).delete()
    audit_record(actor=actor, action="auth.token_revoke", target=user,
                 details={"username": user.username, "revoked": bool(revoked)})
    return bool(revoked)
