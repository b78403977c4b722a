from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Outcome


class _DateRange(forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Bootstrap's small controls, as on the worklist's filters.
        for field in self.fields.values():
            is_select = isinstance(field.widget, forms.Select)
            field.widget.attrs["class"] = "form-select form-select-sm" if is_select else "form-control form-control-sm"

    date_from = forms.DateField(label=_("From (UTC)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("To (UTC, inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    patient = forms.CharField(label=_("Patient MRN"), required=False, max_length=64)


class AuditEventFilterForm(_DateRange):
    user = forms.CharField(label=_("User"), required=False, max_length=150)
    action = forms.CharField(label=_("Action"), required=False, max_length=64,
                             help_text=_("An exact action, or a prefix ending in a dot such as auth."))
    outcome = forms.ChoiceField(label=_("Outcome"), required=False, choices=[("", _("Any"))] + list(Outcome.choices))
    field_order = ["user", "patient", "action", "outcome", "date_from", "date_to"]


class PredictionFilterForm(_DateRange):
    user = forms.CharField(label=_("Uploaded by"), required=False, max_length=150)
    model = forms.CharField(label=_("Model version"), required=False, max_length=100)
    alert = forms.ChoiceField(label=_("COVID-19 alert"), required=False,
                              choices=[("", _("Any")), ("yes", _("Alerted")), ("no", _("Not alerted"))])
    field_order = ["user", "patient", "model", "alert", "date_from", "date_to"]
