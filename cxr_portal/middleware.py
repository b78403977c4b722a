"""Project-wide HTTP hardening that no single app owns."""

from django.conf import settings
from django.http import HttpResponse
from django.utils.translation import gettext as _


class RequestSizeLimitMiddleware:
    """Refuse a request whose declared body is larger than any upload may be, before a byte of it is read.

    A body sent without Content-Length (chunked) is bounded by the upload handlers and
    DATA_UPLOAD_MAX_MEMORY_SIZE instead; gunicorn and the reverse proxy cap it too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return HttpResponse(_("Invalid Content-Length."), status=400, content_type="text/plain")
        if length > settings.MAX_REQUEST_BYTES:
            return HttpResponse(
                _("The request is larger than %(limit)d MB.") % {"limit": settings.MAX_REQUEST_BYTES // (1024 * 1024)},
                status=413,
                content_type="text/plain",
            )
        return self.get_response(request)


class SecurityHeadersMiddleware:
    """Headers Django 5.2's SecurityMiddleware does not set: Content-Security-Policy and Permissions-Policy.

    Also the one place that decides how files leave the portal: a response naming a file is always an
    attachment (an <img> still shows it), so no browser renders a stored file as a page of its own.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        disposition = response.headers.get("Content-Disposition", "")
        if disposition.lower().startswith("inline"):
            response.headers["Content-Disposition"] = "attachment" + disposition[len("inline"):]
        return response
