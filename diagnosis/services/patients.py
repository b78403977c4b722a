import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from audit.services import audit_record
from diagnosis.models import Patient, Sex


@transaction.atomic
def patient_create(
    *,
    actor,
    mrn: str,
    name: str,
    birth_date: datetime.date | None = None,
    sex: str = Sex.UNKNOWN,
) -> Patient:
    mrn = mrn.strip()
    if Patient.objects.filter(mrn=mrn).exists():
        raise ValidationError({"mrn": _("A patient with MRN %(mrn)s already exists.") % {"mrn": mrn}})
    patient = Patient(mrn=mrn, name=name.strip(), birth_date=birth_date, sex=sex or Sex.UNKNOWN, created_by=actor)
    patient.full_clean()
    patient.save()
    audit_record(actor=actor, action="patient.create", target=patient, patient=patient,
                 details={"mrn": mrn, "name": patient.name})
    return patient


def _dicom_date(value: str | None) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None
