from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from cxr_portal.filters import DateRangeFilterForm
from ml.serving.labels import CLASS_NAMES

from .models import CorrectLabel, Sex, StudyStatus, ViewPosition
from .selectors import WorklistFilters
from .texts import CLASS_DISPLAY_NAMES
from .validators import validate_accession_number


class DateInput(forms.DateInput):
    input_type = "date"


class PatientForm(forms.Form):
    mrn = forms.CharField(label=_("MRN"), max_length=64, help_text=_("Medical record number"))
    name = forms.CharField(label=_("Name"), max_length=200)
    birth_date = forms.DateField(label=_("Birth date"), required=False, widget=DateInput)
    sex = forms.ChoiceField(label=_("Sex"), choices=Sex.choices, initial=Sex.UNKNOWN)


class PatientSearchForm(forms.Form):
    q = forms.CharField(label=_("Search by name or MRN"), required=False, max_length=100)


class StudyUploadForm(forms.Form):
    file = forms.FileField(
        label=_("Chest X-ray (PNG, JPEG or DICOM)"),
        widget=forms.ClearableFileInput(attrs={"accept": ".png,.jpg,.jpeg,.dcm,image/png,image/jpeg,application/dicom"}),
    )
    accession_number = forms.CharField(
        label=_("Accession number"), max_length=64, required=False, validators=[validate_accession_number],
        help_text=_("Leave empty to take it from the DICOM file or generate one."),
    )
    view_position = forms.ChoiceField(label=_("View position"), choices=ViewPosition.choices, required=False)
    acquisition_date = forms.DateField(label=_("Acquisition date"), required=False, widget=DateInput)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size == 0:
            raise forms.ValidationError(_("The file is empty."))
        if upload.size > settings.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(megabytes)d MB.") % {"megabytes": settings.MAX_UPLOAD_BYTES // (1024 * 1024)}
            )
        return upload


class FeedbackForm(forms.Form):
    agrees = forms.TypedChoiceField(
        label=_("Do you agree with the model's result?"),
        choices=[("yes", _("Agree")), ("no", _("Disagree"))],
        coerce=lambda value: value == "yes",
        widget=forms.RadioSelect,
    )
    correct_label = forms.ChoiceField(label=_("Correct label"), choices=[("", "—")] + list(CorrectLabel.choices), required=False)
    note = forms.CharField(label=_("Note"), widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=4000)


class WorklistFilterForm(forms.Form):
    status = forms.ChoiceField(label=_("Status"), choices=[("", _("All statuses"))] + list(StudyStatus.choices), required=False)
    predicted_label = forms.ChoiceField(
        label=_("Result"), choices=[("", _("All results"))] + [(name, CLASS_DISPLAY_NAMES[name]) for name in CLASS_NAMES],
        required=False,
    )
    date_from = forms.DateField(label=_("Uploaded from"), required=False, widget=DateInput)
    date_to = forms.DateField(label=_("Uploaded to"), required=False, widget=DateInput)
    patient = forms.CharField(label=_("Patient name or MRN"), required=False, max_length=100)
    needs_my_review = forms.BooleanField(label=_("Needs my review"), required=False)

    def filters(self) -> WorklistFilters:
        if not self.is_valid():
            return WorklistFilters()
        data = self.cleaned_data
        return WorklistFilters(
            status=data["status"], predicted_label=data["predicted_label"], date_from=data["date_from"],
            date_to=data["date_to"], patient=data["patient"].strip(), needs_my_review=data["needs_my_review"],
        )


class ModelVersionRetireForm(forms.Form):
    reason = forms.CharField(label=_("Reason for retiring it (kept in the audit trail)"), max_length=1000,
                             widget=forms.Textarea(attrs={"rows": 3}))
    pause_analysis = forms.BooleanField(
        label=_("Pause analysis: I understand that no version will be active and new studies will wait unanalysed "
                "until a version is promoted."),
        required=False,
    )


class PredictionFilterForm(DateRangeFilterForm):
    user = forms.CharField(label=_("Uploaded by"), required=False, max_length=150)
    model = forms.CharField(label=_("Model version"), required=False, max_length=100)
    alert = forms.ChoiceField(label=_("COVID-19 alert"), required=False,
                              choices=[("", _("Any")), ("yes", _("Alerted")), ("no", _("Not alerted"))])
    field_order = ["user", "patient", "model", "alert", "date_from", "date_to"]
