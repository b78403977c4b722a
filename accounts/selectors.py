"""Read-only queries about people and their access."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from .models import User


def users_for_administration(*, query: str = "") -> QuerySet[User]:
    users = User.objects.select_related("role").order_by("username")
    if query:
        users = users.filter(username__icontains=query)
    return users


@dataclass(frozen=True)
class Lockout:
    ip_address: str
    failures: int
    until: datetime


def lockouts_by_username(*, usernames: list[str]) -> dict[str, list[Lockout]]:
    """Current lockouts (failures over the limit within the cool-off), per username, in one query."""
    from axes.models import AccessAttempt

    cooloff = settings.AXES_COOLOFF_TIME
    since = timezone.now() - cooloff
    attempts = AccessAttempt.objects.filter(
        username__in=usernames, failures_since_start__gte=settings.AXES_FAILURE_LIMIT, attempt_time__gte=since
    )
    result: dict[str, list[Lockout]] = {}
    for attempt in attempts:
        result.setdefault(attempt.username, []).append(
            Lockout(ip_address=attempt.ip_address or "", failures=attempt.failures_since_start,
                    until=attempt.attempt_time + cooloff)
        )
    return result
