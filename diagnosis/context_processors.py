from accounts.roles import Capability, user_can


def open_alerts(request):
    """The navbar badge: open COVID-19 alerts, for users who act on them (one query, clinicians only)."""
    user = getattr(request, "user", None)
    if not user_can(user, Capability.EDIT_CLINICAL):
        return {"open_alert_count": None}
    from diagnosis.selectors import alerts_open_count

    return {"open_alert_count": alerts_open_count()}
