"""Site adaptation pages: the site's labelled films and adaptation jobs, and a candidate against the active version.

Administrators import, adapt, promote (refused when the site's test films speak against it, unless they give a
reason), roll back and run a candidate in shadow; auditors may look. Each view checks, calls one service or
selector, and renders or redirects.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from accounts.access import require_capability
from accounts.roles import Capability

from . import access, selectors
from .services.adaptation import (
    adaptation_request,
    model_version_promote_gated,
    model_version_rollback,
    model_version_shadow_set,
)
from .services.site_films import label_import_start


def _errors(request, error: ValidationError) -> None:
    for message in error.messages:
        messages.error(request, message)


@login_required
@require_GET
def site_adaptation(request):
    access.require_model_oversight(user=request.user, action="site_adaptation.view")
    overview = selectors.site_adaptation_overview()
    return render(request, "diagnosis/site_adaptation.html", {"overview": overview})


@login_required
@require_POST
def site_import_view(request):
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="site_labels.import_start")
    try:
        label_import_start(user=request.user, root=request.POST.get("root", "").strip(),
                           manifest=request.POST.get("manifest", "").strip())
    except ValidationError as error:
        _errors(request, error)
    else:
        messages.success(request, _("The import has started; its progress shows below."))
    return redirect("diagnosis:site_adaptation")


@login_required
@require_POST
def site_adapt_view(request):
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.adapt_request")
    try:
        adaptation_request(user=request.user, steps=request.POST.get("steps", "head"))
    except ValidationError as error:
        _errors(request, error)
    else:
        messages.success(request, _("The adaptation has started; its progress shows below."))
    return redirect("diagnosis:site_adaptation")


@login_required
@require_GET
def model_version_compare(request, model_version_id: int):
    access.require_model_oversight(user=request.user, action="model_version.compare")
    model_version = selectors.model_version_get(model_version_id=model_version_id)
    return render(request, "diagnosis/model_version_compare.html", selectors.model_version_comparison(model_version))


@login_required
@require_POST
def model_version_promote_view(request, model_version_id: int):
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.promote")
    model_version = selectors.model_version_get(model_version_id=model_version_id)
    try:
        model_version_promote_gated(model_version=model_version, actor=request.user,
                                    override_reason=request.POST.get("override_reason", ""))
    except ValidationError as error:
        _errors(request, error)
        messages.info(request, _("To promote it anyway, give your reason; it is kept in the audit trail."))
        return redirect("diagnosis:model_version_compare", model_version_id=model_version.pk)
    messages.success(request, _("%(model)s is now the active model.") % {"model": model_version})
    return redirect("diagnosis:model_versions")


@login_required
@require_POST
def model_version_rollback_view(request):
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.rollback")
    try:
        restored = model_version_rollback(actor=request.user)
    except ValidationError as error:
        _errors(request, error)
    else:
        messages.success(request, _("Rolled back: %(model)s is the active model again.") % {"model": restored})
    return redirect("diagnosis:model_versions")


@login_required
@require_POST
def model_version_shadow_view(request, model_version_id: int):
    require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.shadow")
    model_version = selectors.model_version_get(model_version_id=model_version_id)
    try:
        model_version_shadow_set(model_version=model_version, actor=request.user,
                                 enabled=request.POST.get("enabled") == "1")
    except ValidationError as error:
        _errors(request, error)
    return redirect("diagnosis:model_version_compare", model_version_id=model_version.pk)
