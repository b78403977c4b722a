"""A limit per client address against password spraying: one password tried on many usernames.

Axes locks one username from one address after a few failures; someone trying a common password against
every username never trips it. This counts the distinct usernames that failed to sign in from an address
(page and API token alike) in a fixed window of the shared cache, and refuses every attempt from that
address for the rest of the window once there are too many. Repeated failures of one username count once,
so a ward behind one NAT address is not locked by one colleague's typos (Axes handles those).
"""

import hashlib
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

from audit.context import client_ip


def _key(address: str) -> str:
    window = settings.LOGIN_ADDRESS_WINDOW_SECONDS
    return f"sign-in-failed-usernames:{address}:{int(time.time() // window)}"


def address_failure_record(*, address: str | None, username: str) -> int:
    """Count the username once per address and window; returns the address's count of failed usernames."""
    if not address:
        return 0
    key, timeout = _key(address), settings.LOGIN_ADDRESS_WINDOW_SECONDS + 5
    seen = f"{key}:{hashlib.sha256(username.casefold().encode('utf-8')).hexdigest()[:32]}"
    if not cache.add(seen, 1, timeout=timeout):  # this username already failed from here in this window
        return cache.get(key) or 0
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def address_is_limited(*, address: str | None) -> bool:
    return bool(address) and (cache.get(_key(address)) or 0) >= settings.LOGIN_ADDRESS_USERNAME_LIMIT


class AddressFailureLimitBackend:
    """First authentication backend: refuses every attempt from an address over the limit, before any password
    is checked. It flags the request as Axes does, so the same lockout answer (429) goes out."""

    def authenticate(self, request, **credentials):
        if request is not None and address_is_limited(address=client_ip(request)):
            request.axes_locked_out = True
            request.cxr_address_limited = True
            raise PermissionDenied
        return None
    # No get_user: sessions never name this backend (Django's test client picks the first backend that has one).
