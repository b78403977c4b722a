"""API token authentication with a lifetime and a record of the last use."""

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from audit.context import current_request_context

from .models import ApiTokenUse

# Record a use at most this often per token: a busy integration must not write on every request.
LAST_USE_RESOLUTION_SECONDS = 60


def api_token_expires_at(token):
    return token.created + settings.API_TOKEN_LIFETIME


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        now = timezone.now()
        if api_token_expires_at(token) <= now:
            raise exceptions.AuthenticationFailed(_("The API token has expired. Ask for a new one at /api/auth/token/."))
        use = ApiTokenUse.objects.filter(token=token).first()
        if use is None or (now - use.last_used_at).total_seconds() >= LAST_USE_RESOLUTION_SECONDS:
            ApiTokenUse.objects.update_or_create(
                token=token, defaults={"last_used_at": now, "last_used_from": current_request_context().client_ip})
        return user, token
