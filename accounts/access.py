"""The capability gate every app uses: allowed, or refused and the refusal written to the audit trail."""

from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from audit.models import Outcome
from audit.services import audit_record

from .roles import Capability, user_can


def require_capability(*, user, capability: Capability, action: str, target=None) -> None:
    if user_can(user, capability):
        return
    if getattr(user, "is_authenticated", False):
        audit_record(actor=user, action=action, target=target, outcome=Outcome.DENIED,
                     details={"required": capability.value})
    raise PermissionDenied(_("Your role does not allow this."))
