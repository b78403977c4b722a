"""What the filtered list pages (audit log, prediction history) share: the date-range form, which filters were
given, how they are written to the audit trail, and the day range as a query."""

import datetime

from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _


class DateRangeFilterForm(forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Bootstrap's small controls, as on the worklist's filters.
        for field in self.fields.values():
            is_select = isinstance(field.widget, forms.Select)
            field.widget.attrs["class"] = "form-select form-select-sm" if is_select else "form-control form-control-sm"

    date_from = forms.DateField(label=_("From (UTC)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("To (UTC, inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    patient = forms.CharField(label=_("Patient MRN"), required=False, max_length=64)


def filters_given(form: forms.Form) -> dict:
    """The form's non-empty filters; none when the form is invalid."""
    if not form.is_valid():
        return {}
    return {name: value for name, value in form.cleaned_data.items() if value not in ("", None)}


def filters_for_audit(filters: dict) -> dict:
    return {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in filters.items()}


def within_days(queryset: QuerySet, field: str, date_from: datetime.date | None,
                date_to: datetime.date | None) -> QuerySet:
    """Rows whose ``field`` falls on date_from .. date_to (both included, UTC days)."""
    if date_from:
        queryset = queryset.filter(**{f"{field}__gte": datetime.datetime.combine(date_from, datetime.time.min, datetime.UTC)})
    if date_to:
        end = datetime.datetime.combine(date_to + datetime.timedelta(days=1), datetime.time.min, datetime.UTC)
        queryset = queryset.filter(**{f"{field}__lt": end})
    return queryset
