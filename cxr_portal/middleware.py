"""Project-wide HTTP hardening that no single app owns."""

import logging
import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext as _
from django.views import defaults

logger = logging.getLogger(__name__)


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
            return _refusal(request, _("Invalid Content-Length."), status=400)
        if length > settings.MAX_REQUEST_BYTES:
            return _refusal(request, _("The request is larger than %(limit)d MB.") % {
                "limit": settings.MAX_REQUEST_BYTES // (1024 * 1024)}, status=413)
        return self.get_response(request)


def _refusal(request, message: str, *, status: int) -> HttpResponse:
    """A refusal before any view runs: the API's one error shape ({"detail": ...}) for API clients, text otherwise."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


class NullCharacterMiddleware:
    """Refuse a NUL character in the path, a query parameter, a form field or a JSON body with 400.

    PostgreSQL cannot store or compare NUL in text, so one that reaches a query fails with a 500; no
    field of the portal has a use for it. Multipart uploads are left to the forms, whose text fields
    refuse NUL themselves.
    """

    JSON_NUL = b"\\u0000"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._carries_nul(request):
            message = _("The request contains a NUL character, which no field accepts.")
            return _refusal(request, message, status=400)
        return self.get_response(request)

    def _carries_nul(self, request) -> bool:
        if "\x00" in request.path or any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
            return True
        content_type = request.META.get("CONTENT_TYPE", "")
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if not declared or declared > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return False
        if content_type.startswith("application/json"):
            body = request.body
            return b"\x00" in body or self.JSON_NUL in body.lower()
        if content_type.startswith("application/x-www-form-urlencoded"):
            return any("\x00" in key or "\x00" in value for key, values in request.POST.lists() for value in values)
        return False


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


# What an unreachable or restarting PostgreSQL looks like to Django.
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER_SECONDS = 10


def database_unavailable_response(request) -> HttpResponse:
    """503 with Retry-After: JSON for the API, a page that reloads itself for people. Queries nothing."""
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"detail": _("The service is temporarily unavailable (database). Please retry shortly.")}, status=503
        )
    else:
        response = HttpResponse(
            render_to_string("503.html", {"retry_after": DATABASE_RETRY_AFTER_SECONDS}), status=503
        )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    """A view that fails because PostgreSQL is down answers 503, not 500.

    Failures inside other middleware (loading the session or the user) reach server_error below instead.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DATABASE_ERRORS):
            logger.warning("Database unavailable: %s %s: %s", request.method, request.path, exception)
            return database_unavailable_response(request)
        return None


def server_error(request):
    """handler500: Django calls it while handling the exception, so sys.exc_info() names the cause."""
    if isinstance(sys.exc_info()[1], DATABASE_ERRORS):
        return database_unavailable_response(request)
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": _("Server error: the request was not completed. Try again later.")}, status=500)
    return defaults.server_error(request)
