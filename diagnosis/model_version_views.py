"""The Models page: auditors and administrators review every version; administrators promote, roll back and retire.

Each view checks the capability, calls one selector or service, and renders or redirects.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.access import require_capability
from accounts.roles import Capability
from cxr_portal.form_errors import form_add_service_errors

from . import access, selectors
from .forms import ModelVersionRetireForm
from .services.model_activation import NoticeLevel, model_version_promote
from .services.model_registry import model_version_active, model_version_retire

MESSAGE_LEVELS = {NoticeLevel.INFO: messages.INFO, NoticeLevel.WARNING: messages.WARNING}


@login_required
@require_GET
def model_versions(request):
    access.require_model_oversight(user=request.user, action="model_version.list")
    return render(request, "diagnosis/model_versions.html", {
        "versions": selectors.model_versions_for_page(),
        "agreement": selectors.agreement_by_model_version(),
        "site_validation_min_films": settings.CXR_SITE_VALIDATION_MIN_FILMS,
        "active_model": model_version_active(),
        "analysis_pause": selectors.analysis_pause(),
    })


def _model_version_change(request, model_version_id: int, *, action: str, run, done: str):
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action=action)
    model_version = selectors.model_version_get(model_version_id=model_version_id)
    try:
        run(model_version)
    except ValidationError as error:
        for message in error.messages:
            messages.error(request, message)
    else:
        messages.success(request, done % {"model": str(model_version)})
    return redirect("diagnosis:model_versions")


@login_required
@require_POST
def model_version_activate_view(request, model_version_id: int):
    def activate(model_version):
        for notice in model_version_promote(model_version=model_version, actor=request.user):
            messages.add_message(request, MESSAGE_LEVELS[notice.level], notice.text)

    return _model_version_change(request, model_version_id, action="model_version.activate",
                                 done=_("%(model)s is now the active model."), run=activate)


@login_required
@require_http_methods(["GET", "POST"])
def model_version_retire_view(request, model_version_id: int):
    """Retire a version only after confirmation, with a reason; the active one only if analysis is to pause."""
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.retire")
    model_version = selectors.model_version_get(model_version_id=model_version_id)
    # Bound on every POST, so a POST without a reason is refused (400) rather than shown the empty form again.
    form = ModelVersionRetireForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            model_version_retire(model_version=model_version, actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, _("%(model)s retired.") % {"model": str(model_version)})
            if form.cleaned_data["pause_analysis"]:
                messages.warning(request, _("Analysis is paused: no version is active. New studies wait in the "
                                            "queue until you promote a version."))
            return redirect("diagnosis:model_versions")
    return render(request, "diagnosis/model_version_retire.html", {
        "form": form, "version": model_version, "is_active": model_version.status == "active",
    }, status=400 if form.errors else 200)
