"""Who is acting, from where: set once per request so services need not pass the request around."""

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    client_ip: str | None = None
    user_agent: str = ""


_current: ContextVar[RequestContext] = ContextVar("audit_request_context", default=RequestContext())


def current_request_context() -> RequestContext:
    return _current.get()


def set_request_context(context: RequestContext):
    return _current.set(context)


def reset_request_context(token) -> None:
    _current.reset(token)


def client_ip(request) -> str | None:
    """The client's address as the audit trail and the login lockout both see it.

    REMOTE_ADDR only: the reverse proxy (gunicorn's forwarded_allow_ips) is the one place that
    decides which X-Forwarded-For to trust, so a client cannot pick its own address here.
    """
    return request.META.get("REMOTE_ADDR") or None


def request_context_from(request) -> RequestContext:
    return RequestContext(
        client_ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
    )
