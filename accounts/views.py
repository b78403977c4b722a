"""Sign-in steps after the password: the second factor, and API tokens."""

import base64
import io

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import Resolver404, resolve, reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from . import services
from .authentication import ExpiringTokenAuthentication, api_token_expires_at
from .forms import LoginForm, TwoFactorForm
from .roles import Capability, user_can, user_requires_two_factor

SETUP_DEVICE_SESSION_KEY = "cxr_totp_setup_device"

# The capability each page needs, by URL name (exact) or namespace. The views check the same capabilities on
# every request; this only picks where a sign-in lands, so nobody is sent to a page their role refuses (and
# the audit trail does not record a refusal they never asked for).
PAGE_CAPABILITIES: dict[str, tuple[Capability, ...]] = {
    "diagnosis:home": (),
    "diagnosis:model_versions": (Capability.MANAGE_MODELS, Capability.VIEW_AUDIT),
    "diagnosis:model_version_monitoring": (Capability.MANAGE_MODELS, Capability.VIEW_AUDIT),
    "diagnosis:model_version_activate": (Capability.MANAGE_MODELS,),
    "diagnosis:model_version_retire": (Capability.MANAGE_MODELS,),
    "diagnosis:alert_deliveries": (Capability.MANAGE_USERS,),
    "diagnosis": (Capability.VIEW_CLINICAL,),
    "administration": (Capability.MANAGE_USERS,),
    "audit": (Capability.VIEW_AUDIT,),
}


def page_allowed_for(user, path: str) -> bool:
    """Whether ``user``'s role may open the page at ``path`` (a sign-in page never: it would loop)."""
    try:
        match = resolve(path.split("?", 1)[0])
    except Resolver404:
        return False
    if match.namespace == "accounts":
        return False
    needed = PAGE_CAPABILITIES.get(match.view_name, PAGE_CAPABILITIES.get(match.namespace, ()))
    return not needed or any(user_can(user, capability) for capability in needed)


def landing_url(request, user) -> str:
    """Where a sign-in ends: the page asked for (``next``) when it is on this site and the role may open it,
    otherwise the role's home page."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if (candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                       require_https=request.is_secure())
            and page_allowed_for(user, candidate)):
        return candidate
    return reverse("diagnosis:home")


def _next_url(request) -> str:
    return landing_url(request, request.user)


class LoginView(auth_views.LoginView):
    """Django's sign-in page; it lands on ``next`` only when the role may open it (landing_url)."""

    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def get_success_url(self) -> str:
        user = self.request.user if self.request.user.is_authenticated else None
        if user is not None and user_requires_two_factor(user):
            # The second factor comes next; it carries ``next`` on and decides once the role is proven.
            candidate = self.get_redirect_url()
            target = reverse("accounts:two_factor")
            return f"{target}?{urlencode({'next': candidate})}" if candidate else target
        return landing_url(self.request, user)


@login_required
@require_http_methods(["GET", "POST"])
def two_factor(request):
    """Ask for the current code of the user's authenticator; send users without one to enrol."""
    if services.two_factor_device_for(user=request.user) is None:
        return HttpResponseRedirect(f"{reverse('accounts:two_factor_setup')}?{urlencode({'next': _next_url(request)})}")
    form = TwoFactorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = services.two_factor_verify(user=request.user, token=form.cleaned_data["token"])
        if device is not None:
            otp_login(request, device)
            return HttpResponseRedirect(_next_url(request))
        form.add_error("token", _("That code is not valid. Wait for the next code and try again."))
    return render(request, "accounts/two_factor.html", {"form": form, "next": _next_url(request)},
                  status=400 if form.errors else 200)


def _qr_code_data_uri(text: str) -> str:
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_setup(request):
    """Enrol an authenticator app: scan the code, type one code to confirm."""
    if services.two_factor_device_for(user=request.user) is not None:
        # Replacing a device is an administrator's decision (user_two_factor_reset), not the session's.
        return HttpResponseRedirect(f"{reverse('accounts:two_factor')}?{urlencode({'next': _next_url(request)})}")
    device = TOTPDevice.objects.filter(id=request.session.get(SETUP_DEVICE_SESSION_KEY), user=request.user,
                                       confirmed=False).first()
    if device is None:
        device = services.totp_device_start(user=request.user)
        request.session[SETUP_DEVICE_SESSION_KEY] = device.id
    form = TwoFactorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if services.totp_device_confirm(user=request.user, device=device, token=form.cleaned_data["token"]):
            request.session.pop(SETUP_DEVICE_SESSION_KEY, None)
            otp_login(request, device)
            return HttpResponseRedirect(_next_url(request))
        form.add_error("token", _("That code is not valid. Check the clock of your phone and try again."))
    secret = base64.b32encode(device.bin_key).decode("ascii")
    return render(
        request,
        "accounts/two_factor_setup.html",
        {"form": form, "secret": secret, "qr_code": _qr_code_data_uri(device.config_url), "next": _next_url(request)},
        status=400 if form.errors else 200,
    )


TokenRequest = inline_serializer("TokenRequest", {
    "username": serializers.CharField(),
    "password": serializers.CharField(),
    "otp_token": serializers.CharField(required=False, help_text="Current TOTP code; required for administrators and auditors"),
})
TokenResponse = inline_serializer("TokenResponse", {
    "token": serializers.CharField(help_text="A new token on every request; the previous one stops working"),
    "expires_at": serializers.DateTimeField(),
})


@extend_schema(methods=["POST"], request=TokenRequest, responses={200: TokenResponse})
@extend_schema(methods=["DELETE"], request=None, responses={204: None})
@api_view(["POST", "DELETE"])
@authentication_classes([ExpiringTokenAuthentication, SessionAuthentication])
@permission_classes([AllowAny])
def api_token(request):
    """POST username and password (and a TOTP code where the role needs one) for your token; DELETE revokes it."""
    if request.method == "DELETE":
        if not request.user.is_authenticated:
            return Response({"detail": _("Authentication credentials were not provided.")}, status=status.HTTP_401_UNAUTHORIZED)
        services.api_token_revoke(actor=request.user, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    username = str(request.data.get("username", ""))
    password = str(request.data.get("password", ""))
    if not username or not password:
        return Response({"detail": _("Send username and password.")}, status=status.HTTP_400_BAD_REQUEST)
    # The Django request, not DRF's wrapper: the lockout flag must land where AxesMiddleware looks.
    django_request = request._request
    user = authenticate(django_request, username=username, password=password)
    if getattr(django_request, "axes_locked_out", False):
        return Response({"detail": _("Too many failed sign-in attempts. Try again later.")}, status=status.HTTP_429_TOO_MANY_REQUESTS)
    if user is None:
        return Response({"detail": _("That username and password do not match an active account.")},
                        status=status.HTTP_400_BAD_REQUEST)
    if user_requires_two_factor(user):
        if services.two_factor_verify(user=user, token=str(request.data.get("otp_token", ""))) is None:
            return Response({"detail": _("A valid two-factor code (otp_token) is required for your role.")},
                            status=status.HTTP_403_FORBIDDEN)
    token = services.api_token_issue(user=user)
    # The same signal a page sign-in sends: Axes resets this username's failures, last_login moves, the audit
    # trail records the sign-in. The token endpoint then counts exactly as the login page does.
    user_logged_in.send(sender=user.__class__, request=django_request, user=user)
    return Response({"token": token.key, "expires_at": api_token_expires_at(token)})
