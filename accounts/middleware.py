"""Session lifetime and the second factor, enforced on every request."""

import time

from django.conf import settings
from django.contrib.auth import logout
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from .roles import user_requires_two_factor

SESSION_STARTED_KEY = "cxr_session_started"
SESSION_LAST_SEEN_KEY = "cxr_session_last_seen"


class SessionTimeoutMiddleware:
    """End a session that was idle too long or has lived too long, whatever the cookie says.

    The check is on the server: a copied cookie stops working at the same moment.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = time.time()
            session = request.session
            started = session.get(SESSION_STARTED_KEY)
            last_seen = session.get(SESSION_LAST_SEEN_KEY)
            if started is None:
                session[SESSION_STARTED_KEY] = started = now
            idle = last_seen is not None and now - last_seen > settings.SESSION_IDLE_TIMEOUT_SECONDS
            expired = now - started > settings.SESSION_ABSOLUTE_LIFETIME_SECONDS
            if idle or expired:
                # logout() flushes the session row and sends user_logged_out, which is audited.
                logout(request)
                if request.path.startswith("/api/"):
                    return JsonResponse({"detail": _("Your session has expired. Please sign in again.")}, status=401)
                return redirect(f"{reverse('accounts:login')}?{urlencode({'next': request.get_full_path()})}")
            # Saving on every request would rewrite the session row each time; a minute's precision is enough.
            if last_seen is None or now - last_seen > 60:
                session[SESSION_LAST_SEEN_KEY] = now
        return self.get_response(request)


# Paths an administrator or auditor may reach before proving the second factor.
TWO_FACTOR_EXEMPT_URL_NAMES = ("accounts:login", "accounts:logout", "accounts:two_factor", "accounts:two_factor_setup")


class TwoFactorRequiredMiddleware:
    """Administrators and auditors signed in with a password only may do nothing but finish signing in.

    API clients authenticate with tokens, issued only after the second factor (accounts.views.api_token).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if user.is_authenticated and user_requires_two_factor(user) and not user.is_verified():
            exempt = {reverse(name) for name in TWO_FACTOR_EXEMPT_URL_NAMES}
            if request.path not in exempt and not request.path.startswith(settings.STATIC_URL):
                if request.path.startswith("/api/"):
                    return JsonResponse({"detail": _("Two-factor verification is required.")}, status=403)
                return redirect(f"{reverse('accounts:two_factor')}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
