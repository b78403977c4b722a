"""Security headers on static files, which WhiteNoise serves before any other middleware sees the response."""

from django.conf import settings


def static_security_headers(headers, path: str, url: str) -> None:
    headers["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY
    headers["X-Frame-Options"] = settings.X_FRAME_OPTIONS
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = settings.SECURE_REFERRER_POLICY
