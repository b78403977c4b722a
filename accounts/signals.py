"""Log sign-ins, sign-outs and failed attempts to the audit trail."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.models import Outcome
from audit.services import audit_record


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.login", target=user)


@receiver(user_logged_out)
def record_logout(sender, request, user, **kwargs):
    if user is not None:
        audit_record(actor=user, action="auth.logout", target=user)


@receiver(user_login_failed)
def record_login_failure(sender, credentials, request=None, **kwargs):
    audit_record(action="auth.login_failed", outcome=Outcome.DENIED,
                 username=str(credentials.get("username", ""))[:150])
