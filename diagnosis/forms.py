from django import forms
from django.conf import settings

from .models import Sex, ViewPosition


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
