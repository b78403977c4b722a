from django import forms
from django.conf import settings

from ml.labels import CLASS_NAMES, DISPLAY_NAMES

from .models import CorrectLabel, Sex, StudyStatus, ViewPosition
from .selectors import WorklistFilters


class DateInput(forms.DateInput):
    input_type = "date"


class PatientForm(forms.Form):
    mrn = forms.CharField(label="MRN", max_length=64, help_text="Medical record number")
    name = forms.CharField(max_length=200)
    birth_date = forms.DateField(required=False, widget=DateInput)
    sex = forms.ChoiceField(choices=Sex.choices, initial=Sex.UNKNOWN)


class PatientSearchForm(forms.Form):
    q = forms.CharField(label="Search by name or MRN", required=False, max_length=100)


class StudyUploadForm(forms.Form):
    file = forms.FileField(
        label="Chest X-ray (PNG, JPEG or DICOM)",
        widget=forms.ClearableFileInput(attrs={"accept": ".png,.jpg,.jpeg,.dcm,image/png,image/jpeg,application/dicom"}),
    )
    accession_number = forms.CharField(
        max_length=64, required=False, help_text="Leave empty to take it from the DICOM file or generate one."
    )
    view_position = forms.ChoiceField(choices=ViewPosition.choices, required=False)
    acquisition_date = forms.DateField(required=False, widget=DateInput)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size == 0:
            raise forms.ValidationError("The file is empty.")
        if upload.size > settings.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The file is larger than {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
            )
        return upload


class FeedbackForm(forms.Form):
    agrees = forms.TypedChoiceField(
        label="Do you agree with the model's result?",
        choices=[("yes", "Agree"), ("no", "Disagree")],
        coerce=lambda value: value == "yes",
        widget=forms.RadioSelect,
    )
    correct_label = forms.ChoiceField(label="Correct label", choices=[("", "—")] + list(CorrectLabel.choices), required=False)
    note = forms.CharField(label="Note", widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=4000)


class WorklistFilterForm(forms.Form):
    status = forms.ChoiceField(label="Status", choices=[("", "All statuses")] + list(StudyStatus.choices), required=False)
    predicted_label = forms.ChoiceField(
        label="Result", choices=[("", "All results")] + [(name, DISPLAY_NAMES[name]) for name in CLASS_NAMES], required=False
    )
    date_from = forms.DateField(label="Uploaded from", required=False, widget=DateInput)
    date_to = forms.DateField(label="Uploaded to", required=False, widget=DateInput)
    patient = forms.CharField(label="Patient name or MRN", required=False, max_length=100)
    needs_my_review = forms.BooleanField(label="Needs my review", required=False)

    def filters(self) -> WorklistFilters:
        if not self.is_valid():
            return WorklistFilters()
        data = self.cleaned_data
        return WorklistFilters(
            status=data["status"], predicted_label=data["predicted_label"], date_from=data["date_from"],
            date_to=data["date_to"], patient=data["patient"].strip(), needs_my_review=data["needs_my_review"],
        )
