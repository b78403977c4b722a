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
    username: str = "",
) -> Patient:
    mrn = mrn.strip()
    if Patient.objects.filter(mrn=mrn).exists():
        raise ValidationError({"mrn": ValidationError(_("A patient with MRN %(mrn)s already exists.") % {"mrn": mrn},
                                                      code="mrn_taken")})
    patient = Patient(mrn=mrn, name=name.strip(), birth_date=birth_date, sex=sex or Sex.UNKNOWN, created_by=actor)
    patient.full_clean(exclude=["created_by"])  # None when a PACS or DICOMweb sender created it
    patient.save()
    audit_record(actor=actor, username=username, action="patient.create", target=patient, patient=patient,
                 details={"mrn": mrn, "name": patient.name})
    return patient


def patient_get_or_create_from_dicom(*, actor, metadata: dict[str, str], username: str = "") -> Patient | None:
    """The patient a DICOM file names, created if new; None when the file names no patient."""
    mrn = metadata.get("patient_id", "").strip()
    if not mrn:
        return None
    existing = Patient.objects.filter(mrn=mrn).first()
    if existing is not None:
        return existing
    return patient_create(
        actor=actor,
        username=username,
        mrn=mrn,
        name=metadata.get("patient_name", "").replace("^", " ").strip() or f"Patient {mrn}",
        birth_date=_dicom_date(metadata.get("birth_date")),
        sex=metadata.get("sex", "U")[:1].upper() if metadata.get("sex", "U")[:1].upper() in Sex.values else Sex.UNKNOWN,
    )


def _dicom_date(value: str | None) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None
