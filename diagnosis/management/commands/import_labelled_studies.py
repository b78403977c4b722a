"""Import a site's labelled films as confirmed studies (normal ingest and inference; idempotent by SHA-256)."""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.roles import Capability, user_can
from diagnosis.services.site_films import label_import_create, label_import_run


class Command(BaseCommand):
    help = ("Import labelled films from ROOT/{covid,normal,pneumonia}/ or a CSV of file,label,patient "
            "(PNG, JPEG or DICOM); each label is recorded as confirmed by --user.")

    def add_arguments(self, parser):
        parser.add_argument("root", type=Path, help="Folder with covid/normal/pneumonia subfolders, or the CSV's base")
        parser.add_argument("--manifest", type=Path, help="CSV with columns file, label, patient (paths relative to it)")
        parser.add_argument("--user", required=True, help="Administrator who confirms the labels")

    def handle(self, *args, root: Path, manifest: Path | None, user: str, **options):
        account = User.objects.filter(username=user).first()
        if account is None or not user_can(account, Capability.MANAGE_MODELS):
            raise CommandError(f"{user} is not an administrator.")
        try:
            label_import = label_import_create(user=account, root=root, manifest=manifest)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None

        def show(progress):
            self.stdout.write(f"\r{progress.processed}/{progress.total} files", ending="")

        label_import = label_import_run(label_import_id=label_import.pk, progress=show)
        self.stdout.write("")
        for error in label_import.errors:
            self.stdout.write(self.style.WARNING(f"skipped {error['file']}: {error['reason']}"))
        self.stdout.write(self.style.SUCCESS(
            f"{label_import.created} labelled, {label_import.duplicates} already imported, "
            f"{len(label_import.errors)} skipped, of {label_import.total} files."))
