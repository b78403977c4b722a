from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    name = "diagnosis"
    verbose_name = "Diagnosis support"

    def ready(self):
        from django.conf import settings

        from diagnosis import checks  # noqa: F401 - registers the deployment checks
        from ml.serving.imaging import decode_slots_configure

        decode_slots_configure(settings.MAX_CONCURRENT_DECODES)
