from django import forms
from django.utils.translation import gettext_lazy as _

from cxr_portal.filters import DateRangeFilterForm

from .models import Outcome


class AuditEventFilterForm(DateRangeFilterForm):
    user = forms.CharField(label=_("User"), required=False, max_length=150)
    action = forms.CharField(label=_("Action"), required=False, max_length=64,
                             help_text=_("An exact action, or a prefix ending in a dot such as auth."))
    outcome = forms.ChoiceField(label=_("Outcome"), required=False, choices=[("", _("Any"))] + list(Outcome.choices))
    field_order = ["user", "patient", "action", "outcome", "date_from", "date_to"]
