"""Changes to people and their access. Each writes its audit event in the same transaction."""

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
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
def user_sessions_end(*, user: User, reason: str) -> int:
    """Delete every session and the API token of the user, so no old cookie or key comes back to life
    (a reactivated account, a password someone else knew). Returns the number of sessions ended."""
    user_id = str(user.pk)
    ended = [session.session_key for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
             if session.get_decoded().get("_auth_user_id") == user_id]
    Session.objects.filter(session_key__in=ended).delete()
    tokens, _details = Token.objects.filter(user=user).delete()
    if ended or tokens:
        audit_record(action="user.sessions_end", target=user, username=user.username,
                     details={"reason": reason, "sessions": len(ended), "token": bool(tokens)})
    return len(ended)


@transaction.atomic
def user_deactivate(*, actor: User, user: User) -> User:
    """Sign the user out everywhere: their sessions and API token are deleted."""
    _refuse_on_self(actor=actor, user=user, what=_("deactivate"))
    was_active = user.is_active
    user.is_active = False
    user.save(update_fields=["is_active"])
    user_sessions_end(user=user, reason="deactivation")
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
    """Set a new password. Saving it ends the user's sessions and API token (accounts.password_hooks)."""
    validate_password(password, user=user)
    user.set_password(password)
    user.save(update_fields=["password"])
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
    """A new token on every request (rotation): the user's previous token stops working at once.

    Tokens expire settings.API_TOKEN_LIFETIME after they are issued (accounts.authentication).
    """
    replaced, _details = Token.objects.filter(user=user).delete()
    token = Token.objects.create(user=user)
    audit_record(actor=user, action="auth.token_issue", target=user,
                 details={"replaced_token": bool(replaced), "expires_at": (token.created + settings.API_TOKEN_LIFETIME).isoformat()})
    return token


@transaction.atomic
def api_token_revoke(*, actor: User, user: User) -> bool:
    revoked, _details = Token.objects.filter(user=user).delete()
    audit_record(actor=actor, action="auth.token_revoke", target=user,
                 details={"username": user.username, "revoked": bool(revoked)})
    return bool(revoked)
