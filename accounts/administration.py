"""Pages for administrators: people, their access, and model versions. Every change goes through an audited service."""

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
from diagnosis.access import require_capability

from . import selectors, services
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
        "has_token": Token.objects.filter(user=user).exists(),
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


# Model versions -------------------------------------------------------------------------------


@login_required
@require_GET
def model_version_list(request):
    from diagnosis.models import ModelVersion

    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.list")
    from diagnosis.selectors import model_versions_with_held_out_figures

    versions = ModelVersion.objects.select_related("registered_by").order_by("-created_at")
    return render(request, "administration/model_versions.html",
                  {"versions": model_versions_with_held_out_figures(versions)})


def _model_version_action(request, model_version_id: int, *, action: str, run, done: str):
    from diagnosis.models import ModelVersion

    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action=action)
    model_version = ModelVersion.objects.filter(id=model_version_id).first()
    if model_version is None:
        raise Http404(_("No such model version."))
    try:
        run(model_version)
    except ValidationError as error:
        for message in error.messages:
            messages.error(request, message)
    else:
        messages.success(request, done % {"model": str(model_version)})
    return redirect("administration:model_versions")


def _percent(value) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "?"


@login_required
@require_POST
def model_version_activate_view(request, model_version_id: int):
    """Promote a candidate, or roll back to a retired version: either way it becomes the one active version.

    When the version's own validation films already break a limit the site monitor holds it to, the
    administrator is told now: the monitor's comparisons with validation will never show that failure. So
    too when its shortcut audit suspects a shortcut, or when it has none.
    """
    from diagnosis.services.model_registry import model_version_activate
    from diagnosis.services.monitoring import model_version_reference_breaches

    def activate(version):
        model_version_activate(model_version=version, actor=request.user)
        audit = (version.evaluation or {}).get("shortcut_audit")
        if audit is None:
            messages.info(request, _(
                "No shortcut audit is recorded for %(model)s: whether it reads the lungs or the film around them "
                "is unknown (python -m ml evaluate --record on its test split records one)."
            ) % {"model": version})
        elif audit.get("shortcut_suspected"):
            messages.warning(request, _(
                "%(model)s still classifies %(accuracy)s of its test films correctly with the lungs hidden "
                "(chance %(chance)s): it reads the film around the lungs, which does not carry over to another "
                "hospital's films."
            ) % {"model": version, "accuracy": _percent(audit.get("lungs_hidden_accuracy")),
                 "chance": _percent(audit.get("chance_accuracy"))})
        for breach in model_version_reference_breaches(version):
            messages.warning(request, _(
                "On its own validation films %(model)s already breaks the site monitor's %(check)s limit "
                "(%(hits)s of %(films)s films against %(limit)s). The monitor compares this site with those films, "
                "so only its limit checks can show this failure: watch its first results closely."
            ) % {"model": version, "check": breach.code, "hits": breach.reference_hits, "films": breach.reference_n,
                 "limit": f"{breach.limit:.0%}"})

    return _model_version_action(request, model_version_id, action="model_version.activate",
                                 done=_("%(model)s is now the active model."), run=activate)


@login_required
@require_POST
def model_version_retire_view(request, model_version_id: int):
    from diagnosis.services.model_registry import model_version_retire

    return _model_version_action(request, model_version_id, action="model_version.retire",
                                 done=_("%(model)s retired."),
                                 run=lambda version: model_version_retire(model_version=version, actor=request.user))
