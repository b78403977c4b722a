from django.core.management.base import BaseCommand

from diagnosis.services.model_registry import model_version_ensure_default


class Command(BaseCommand):
    help = "On first start: register and activate the shipped model if no model version is active."

    def handle(self, *args, **options):
        model_version = model_version_ensure_default()
        if model_version is None:
            self.stdout.write(self.style.WARNING("No model is active: uploaded studies will wait in the queue."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Active model: {model_version}."))
