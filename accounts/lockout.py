"""The answer to a locked-out sign-in: JSON on the API, the lockout page elsewhere; 429 with Retry-After."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _


def lockout_response(request, original_response=None, credentials=None):
    by_address = getattr(request, "cxr_address_limited", False)
    retry_after = settings.LOGIN_ADDRESS_WINDOW_SECONDS if by_address else int(settings.AXES_COOLOFF_TIME.total_seconds())
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": _("Too many failed sign-in attempts. Try again later.")}, status=429)
    else:
        response = render(request, settings.AXES_LOCKOUT_TEMPLATE, {"by_address": by_address}, status=429)
    response["Retry-After"] = str(retry_after)
    return response
