from .context import request_context_from, reset_request_context, set_request_context


class AuditContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = set_request_context(request_context_from(request))
        try:
            return self.get_response(request)
        finally:
            reset_request_context(token)
