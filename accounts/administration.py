"""Pages for administrators: people and their access. Every change goes through an audited service.

Model versions are managed on the Models page (diagnosis.model_version_views)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token

from audit.services import audit_record
from cxr_portal.form_errors import form_add_service_errors

from . import selectors, services
from .authentication import api_token_expires_at
from .access import require_capability
from .administration_forms import PasswordResetForm, RoleForm, UserCreateForm, UserSearchForm
from .models import User
from .roles import Capability, RoleName

PAGE_SIZE = 50


def _require_manage_users(request, action: str, target=None) -> None:
    require_capability(user=request.user, capability=Capability.MANAGE_USERS, action=action, target=target)


def _user_or_404(user_id: int) -> User:
    user = User.objects.select_related("role").filter(id=user_id).first()
    if user is None:
        raise Http404(_("No such user."))
    return user


@login_required
@require_GET
def user_list(request):
    _require_manage_users(request, "user.list")
    form = UserSearchForm(request.GET or None)
    query = form.cleaned_data["q"].strip() if form.is_valid() else ""
    page = Paginator(selectors.users_for_administration(query=query), PAGE_SIZE).get_page(request.GET.get("page"))
    users = list(page)
    lockouts = selectors.lockouts_by_username(usernames=[user.username for user in users])
    with_two_factor = set(TOTPDevice.objects.filter(user__in=users, confirmed=True).values_list("user_id", flat=True))
    rows = [{"user": user, "lockouts": lockouts.get(user.username, []), "two_factor": user.id in with_two_factor} for user in users]
    audit_record(actor=request.user, action="user.list", details={"query": query, "page": page.number})
    return render(request, "administration/user_list.html", {"page": page, "rows": rows, "form": form, "query": query})


@login_required
@require_http_methods(["GET", "POST"])
def user_create_view(request):
    _require_manage_users(request, "user.create")
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = services.user_create(
                actor=request.user, username=data["username"], role=RoleName(data["role"]), password=data["password1"],
                email=data["email"], first_name=data["first_name"], last_name=data["last_name"],
            )
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, _("User %(username)s created.") % {"username": user.username})
            return redirect("administration:user_detail", user_id=user.id)
    return render(request, "administration/user_form.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_GET
def user_detail(request, user_id: int):
    _require_manage_users(request, "user.view")
    user = _user_or_404(user_id)
    audit_record(actor=request.user, action="user.view", target=user)
    return render(request, "administration/user_detail.html", _detail_context(user))


def _detail_context(user: User, **forms) -> dict:
    return {
        "subject": user,
        "lockouts": selectors.lockouts_by_username(usernames=[user.username]).get(user.username, []),
        "two_factor": TOTPDevice.objects.filter(user=user, confirmed=True).exists(),
        "token": (token := Token.objects.filter(user=user).select_related("use").first()),
        "token_expires_at": api_token_expires_at(token) if token else None,
        "role_form": forms.get("role_form") or RoleForm(initial={"role": user.role_name}),
        "password_form": forms.get("password_form") or PasswordResetForm(),
    }


def _user_action(request, user_id: int, *, action: str, run, done: str):
    _require_manage_users(request, action)
    user = _user_or_404(user_id)
    try:
        run(user)
    except ValidationError as error:
        for message in error.messages:
            messages.error(request, message)
    else:
        messages.success(request, done % {"username": user.username})
    return redirect("administration:user_detail", user_id=user.id)


@login_required
@require_POST
def user_set_role_view(request, user_id: int):
    _require_manage_users(request, "user.role_change")
    user = _user_or_404(user_id)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.user_set_role(actor=request.user, user=user, role=RoleName(form.cleaned_data["role"]))
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, _("Role of %(username)s changed.") % {"username": user.username})
            return redirect("administration:user_detail", user_id=user.id)
    return render(request, "administration/user_detail.html", _detail_context(user, role_form=form), status=400)


@login_required
@require_POST
def user_reset_password_view(request, user_id: int):
    _require_manage_users(request, "user.password_reset")
    user = _user_or_404(user_id)
    form = PasswordResetForm(request.POST)
    if form.is_valid():
        try:
            services.user_reset_password(actor=request.user, user=user, password=form.cleaned_data["password1"])
        except ValidationError as error:
            form.add_error("password1", error.messages)
        else:
            messages.success(request, _("Password of %(username)s reset.") % {"username": user.username})
            return redirect("administration:user_detail", user_id=user.id)
    return render(request, "administration/user_detail.html", _detail_context(user, password_form=form), status=400)


@login_required
@require_POST
def user_deactivate_view(request, user_id: int):
    return _user_action(request, user_id, action="user.deactivate", done=_("%(username)s deactivated."),
                        run=lambda user: services.user_deactivate(actor=request.user, user=user))


@login_required
@require_POST
def user_reactivate_view(request, user_id: int):
    return _user_action(request, user_id, action="user.reactivate", done=_("%(username)s reactivated."),
                        run=lambda user: services.user_reactivate(actor=request.user, user=user))


@login_required
@require_POST
def user_unlock_view(request, user_id: int):
    return _user_action(request, user_id, action="user.unlock", done=_("%(username)s unlocked."),
                        run=lambda user: services.user_unlock(actor=request.user, user=user))


@login_required
@require_POST
def user_two_factor_reset_view(request, user_id: int):
    return _user_action(request, user_id, action="user.two_factor_reset",
                        done=_("Two-factor device of %(username)s removed; they enrol a new one at their next sign-in."),
                        run=lambda user: services.user_two_factor_reset(actor=request.user, user=user))


@login_required
@require_POST
def user_token_revoke_view(request, user_id: int):
    return _user_action(request, user_id, action="auth.token_revoke", done=_("API token of %(username)s revoked."),
                        run=lambda user: services.api_token_revoke(actor=request.user, user=user))

