"""The site's labelled films: bulk import of labelled studies, and which studies count as confirmed.

Every confirmed film falls, by a stable hash of its patient's MRN, in the locked site test part (never fitted
on) or the adaptation part (``ml.evaluation.site.site_part``).
"""

import csv
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.services import audit_record
from diagnosis.models import Feedback, JobStatus, LabelImport, Patient, SiteLabel, Study
from ml.serving.labels import CLASS_NAMES
from ml.evaluation.site import SITE_TEST, site_part

from . import storage
from .ingest import UploadRejected, image_prepare, study_create
from .patients import patient_create

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: str
    patient: str  # the source's patient id; "" when it has none


@dataclass(frozen=True)
class ConfirmedFilm:
    study_id: int
    image_sha256: str
    label: str
    patient_mrn: str
    part: str  # "test" or "adaptation"


def labelled_files(*, root: Path, manifest: Path | None = None) -> Iterator[LabelledFile | dict]:
    """The files to import, from a ``covid/normal/pneumonia`` folder layout or a CSV of file, label, patient.

    Rows that cannot be imported come out as ``{"file", "reason"}`` so the import reports them and goes on.
    """
    root = Path(root)
    if manifest is not None:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                name = (row.get("file") or "").strip()
                label = (row.get("label") or row.get("cls") or "").strip().lower()
                if not name or label not in CLASS_NAMES:
                    yield {"file": name or f"line {line}",
                           "reason": _("Line %(line)s: needs a file and a label among %(labels)s.") % {
                               "line": line, "labels": ", ".join(CLASS_NAMES)}}
                    continue
                path = (Path(manifest).parent / name).resolve()
                yield LabelledFile(path=path, label=label, patient=(row.get("patient") or "").strip())
        return
    found = False
    for label in CLASS_NAMES:
        folder = root / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                found = True
                yield LabelledFile(path=path, label=label, patient="")
    if not found:
        yield {"file": str(root), "reason": _("No covid, normal or pneumonia folder with images was found here.")}


def hashed_mrn(source_patient_id: str) -> str:
    """The MRN given to an imported patient whose source names no MRN: stable, and not the source's id."""
    return "SITE-" + hashlib.sha256(f"cxr-site-patient:{source_patient_id}".encode()).hexdigest()[:20]


def _patient_for(*, user, item: LabelledFile, data_sha256: str, dicom_patient: str) -> Patient:
    mrn = dicom_patient or hashed_mrn(item.patient or f"image:{data_sha256}")
    existing = Patient.objects.filter(mrn=mrn).first()
    if existing is not None:
        return existing
    return patient_create(actor=user, mrn=mrn, name=_("Imported patient %(id)s") % {"id": mrn[-8:]})


def _import_one(*, user, item: LabelledFile, label_import: LabelImport) -> str:
    """``"created"``, ``"labelled"`` (an existing study got its label) or ``"duplicate"``; raises UploadRejected."""
    try:
        data = item.path.read_bytes()
    except OSError as error:
        raise UploadRejected(_("The file could not be read (%(error)s).") % {"error": error.strerror or error}) from None
    digest = storage.sha256_hex(data)
    existing = Study.objects.filter(image__sha256=digest).select_related("patient").first()
    with transaction.atomic():
        if existing is not None:
            if SiteLabel.objects.filter(study=existing).exists():
                return "duplicate"
            study, outcome = existing, "labelled"
        else:
            decoded = image_prepare(data=data)  # before a patient is created for a file that is no image
            patient = _patient_for(user=user, item=item, data_sha256=digest,
                                   dicom_patient=decoded.metadata.get("patient_id", "").strip())
            study = study_create(patient=patient, uploaded_by=user, data=data, filename=item.path.name[:255],
                                 check_rate=False)
            outcome = "created"
        site_label = SiteLabel.objects.create(study=study, label=item.label, confirmed_by=user,
                                              label_import=label_import)
        audit_record(actor=user, action="site_label.create", target=site_label, study=study,
                     details={"label": item.label, "import": label_import.pk, "sha256": digest,
                              "part": site_part(study.patient.mrn, test_share=settings.CXR_SITE_TEST_SHARE)})
    return outcome


def label_import_create(*, user, root: Path, manifest: Path | None = None) -> LabelImport:
    """Record an import (audited); ``label_import_run`` does it."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValidationError(_("%(folder)s is not a folder.") % {"folder": root})
    if manifest is not None and not Path(manifest).is_file():
        raise ValidationError(_("%(file)s is not a file.") % {"file": manifest})
    with transaction.atomic():
        label_import = LabelImport.objects.create(started_by=user, root=str(root),
                                                  manifest=str(Path(manifest).resolve()) if manifest else "")
        audit_record(actor=user, action="site_labels.import_start", target=label_import,
                     details={"root": label_import.root, "manifest": label_import.manifest})
    return label_import


def label_import_start(*, user, root: str, manifest: str = "") -> LabelImport:
    """From the page: import a folder under CXR_SITE_IMPORT_DIR, as a job on the training queue."""
    from diagnosis.tasks import import_labelled_studies

    base = Path(settings.CXR_SITE_IMPORT_DIR).resolve()
    folder = (base / root).resolve()
    manifest_path = (base / manifest).resolve() if manifest else None
    for path in (folder, manifest_path):
        if path is not None and not path.is_relative_to(base):
            raise ValidationError(_("Only folders under %(base)s can be imported.") % {"base": base})
    with transaction.atomic():
        label_import = label_import_create(user=user, root=folder, manifest=manifest_path)
        transaction.on_commit(lambda: import_labelled_studies.delay(label_import_id=label_import.pk))
    return label_import


def label_import_run(*, label_import_id: int, progress: Callable[[LabelImport], None] | None = None) -> LabelImport:
    """Import every labelled file; a bad file is recorded and skipped. Safe to run twice (by SHA-256)."""
    claimed = LabelImport.objects.filter(id=label_import_id, status=JobStatus.QUEUED).update(status=JobStatus.RUNNING)
    label_import = LabelImport.objects.select_related("started_by").get(id=label_import_id)
    if not claimed:
        return label_import  # another delivery of the task got there first
    user = label_import.started_by
    items = list(labelled_files(root=Path(label_import.root),
                                manifest=Path(label_import.manifest) if label_import.manifest else None))
    label_import.total = len(items)
    label_import.save(update_fields=["total"])
    errors = []
    for item in items:
        if isinstance(item, dict):
            errors.append(item)
        else:
            try:
                outcome = _import_one(user=user, item=item, label_import=label_import)
            except (UploadRejected, ValidationError) as error:
                errors.append({"file": str(item.path), "reason": " ".join(error.messages)})
            else:
                label_import.created += outcome != "duplicate"
                label_import.duplicates += outcome == "duplicate"
        label_import.processed += 1
        label_import.errors = errors
        label_import.save(update_fields=["processed", "created", "duplicates", "errors"])
        if progress is not None:
            progress(label_import)
    with transaction.atomic():
        label_import.status = JobStatus.DONE
        label_import.finished_at = timezone.now()
        label_import.save(update_fields=["status", "finished_at"])
        audit_record(actor=user, action="site_labels.import", target=label_import,
                     details={"root": label_import.root, "manifest": label_import.manifest,
                              "files": label_import.total, "labelled": label_import.created,
                              "duplicates": label_import.duplicates, "skipped": len(errors)})
    return label_import


def _feedback_labels() -> dict[int, str]:
    """Study id -> class, for studies whose clinician feedback confirms one.

    Each clinician's latest feedback on the study counts once; with CXR_SITE_LABEL_AGREEMENT = 2, at least two
    clinicians must name the same class and none another; with 1, the latest feedback must name a class.
    """
    required = max(1, settings.CXR_SITE_LABEL_AGREEMENT)
    latest: dict[int, dict[int, tuple]] = {}
    for study_id, author_id, label, updated_at in Feedback.objects.order_by("updated_at").values_list(
            "study_id", "author_id", "correct_label", "updated_at"):
        latest.setdefault(study_id, {})[author_id] = (updated_at, label)
    labels = {}
    for study_id, by_author in latest.items():
        if required == 1:
            label = max(by_author.values())[1]
            if label in CLASS_NAMES:
                labels[study_id] = label
            continue
        named = {label for _at, label in by_author.values()}
        if len(named) == 1 and len(by_author) >= required and next(iter(named)) in CLASS_NAMES:
            labels[study_id] = next(iter(named))
    return labels


def confirmed_site_films() -> list[ConfirmedFilm]:
    """Every confirmed study's film: imported labels first (they were confirmed on import), then feedback."""
    labels = _feedback_labels()
    labels.update(dict(SiteLabel.objects.values_list("study_id", "label")))
    films = []
    for study_id, sha256, mrn in Study.objects.filter(id__in=labels).order_by("id").values_list(
            "id", "image__sha256", "patient__mrn"):
        films.append(ConfirmedFilm(study_id=study_id, image_sha256=sha256, label=labels[study_id], patient_mrn=mrn,
                                   part=site_part(mrn, test_share=settings.CXR_SITE_TEST_SHARE)))
    return films


def site_film_counts() -> dict[str, dict[str, int]]:
    """{part: {class: films}} for the page."""
    counts = {part: {name: 0 for name in CLASS_NAMES} for part in (SITE_TEST, "adaptation")}
    for film in confirmed_site_films():
        counts[film.part][film.label] += 1
    return counts
