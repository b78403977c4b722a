"""Pages no app owns."""

from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static


def favicon(request):
    """The portal's icon, for browsers that ask for /favicon.ico (pages name it in base.html)."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))
