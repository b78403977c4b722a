"""Write clinician-labelled images as a data set ml.train reads: <out>/manifest.csv and <out>/<label>/<sha256>.<ext>."""

import csv
from collections import defaultdict
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_record
from diagnosis.selectors import feedback_training_examples
from diagnosis.services import storage

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}


class Command(BaseCommand):
    help = "Export images with a clinician's correct label (COVID-19, No findings, Pneumonia) for retraining."

    def add_arguments(self, parser):
        parser.add_argument("out", type=Path, help="Folder to create (must not exist or be empty)")

    def handle(self, *args, out: Path, **options):
        if out.exists() and any(out.iterdir()):
            raise CommandError(f"{out} is not empty.")
        labels_by_image: dict[str, set[str]] = defaultdict(set)
        images = {}
        for feedback in feedback_training_examples():
            image = feedback.study.image
            labels_by_image[image.sha256].add(feedback.correct_label)
            images[image.sha256] = (image, feedback.study.patient_id)
        written = conflicting = 0
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "cls", "source", "patient"])
            for sha256, labels in sorted(labels_by_image.items()):
                if len(labels) != 1:
                    # Clinicians disagree: the image is not a training label until they settle it.
                    conflicting += 1
                    continue
                label = labels.pop()
                image, patient_id = images[sha256]
                relative = Path(label) / f"{sha256}.{EXTENSIONS.get(image.format, 'bin')}"
                (out / label).mkdir(exist_ok=True)
                (out / relative).write_bytes(storage.blob_get(sha256, kind=storage.ORIGINAL))
                # A pseudonymous patient id keeps a patient's images in one split; the MRN never leaves.
                writer.writerow([relative.as_posix(), label, "cxr-portal-feedback", f"portal-patient-{patient_id}"])
                written += 1
        audit_record(action="feedback.export_dataset", username="manage.py",
                     details={"images": written, "conflicting": conflicting, "out": str(out)})
        self.stdout.write(f"Wrote {written} labelled image(s) to {out}; skipped {conflicting} with conflicting labels.")
