"""Pages no app owns."""

from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.utils.translation import gettext as _
from django.views import defaults


def favicon(request):
    """The portal's icon, for browsers that ask for /favicon.ico (pages name it in base.html)."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


def page_not_found(request, exception):
    """handler404: under /api/ the API's one error shape ({"detail": ...}), elsewhere the portal's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": _("Not found.")}, status=404)
    return defaults.page_not_found(request, exception)
