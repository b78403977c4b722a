from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    name = "diagnosis"
    verbose_name = "Diagnosis support"

    def ready(self):
        from diagnosis import checks  # noqa: F401 - registers the deployment checks
