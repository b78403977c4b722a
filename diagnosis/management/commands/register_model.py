from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from diagnosis.services.model_registry import model_version_register


class Command(BaseCommand):
    help = "Register a trained model artifact folder (from `python -m ml train`) as a candidate model version."

    def add_arguments(self, parser):
        parser.add_argument("artifact_dir", type=Path)
        parser.add_argument("--activate", action="store_true", help="Make it the active model (retires the current one).")

    def handle(self, *args, artifact_dir, activate, **options):
        try:
            model_version = model_version_register(artifact_dir=artifact_dir, activate=activate)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(self.style.SUCCESS(f"{model_version} registered ({model_version.status})."))
