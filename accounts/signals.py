"""Log sign-ins, sign-outs, failed attempts and lockouts to the audit trail."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.context import client_ip
from audit.models import Outcome
from audit.services import audit_record

from .sign_in_limits import address_failure_record


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.login", target=user)


@receiver(user_logged_out)
def record_logout(sender, request, user, **kwargs):
    if user is not None:
        audit_record(actor=user, action="auth.logout", target=user)


@receiver(user_login_failed)
def record_login_failure(sender, credentials, request=None, **kwargs):
    # Axes' own receiver runs first (its app is listed first) and flags a request refused by the lockout.
    details = {"locked_out": bool(getattr(request, "axes_locked_out", False))}
    if getattr(request, "cxr_address_limited", False):
        details["address_limited"] = True
    username = str(credentials.get("username", ""))
    audit_record(action="auth.login_failed", outcome=Outcome.DENIED, username=username[:150], details=details)
    # Every failure counts towards its address's limit (accounts.sign_in_limits), the page's and the API's alike.
    if request is not None:
        address_failure_record(address=client_ip(request), username=username)


@receiver(user_locked_out)
def record_lockout(sender, request=None, username=None, ip_address=None, **kwargs):
    audit_record(action="auth.lockout", outcome=Outcome.DENIED, username=str(username or "")[:150],
                 details={"ip_address": ip_address})
