from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from diagnosis.models import ModelVersion
from diagnosis.services.model_registry import model_version_active
from diagnosis.services.monitoring import model_version_monitor_record, model_version_monitoring_report


class Command(BaseCommand):
    help = ("Run the site monitor on a model version (default: the active one) and print its checks; "
            "--record also stores the verdict as the hourly scheduled run does (audit event and e-mail on a change).")

    def add_arguments(self, parser):
        parser.add_argument("--version-id", type=int, default=None, help="ModelVersion id (default: the active one)")
        parser.add_argument("--days", type=int, default=None,
                            help="results of the last N days (default CXR_MONITOR_WINDOW_DAYS; 0: all)")
        parser.add_argument("--record", action="store_true")

    def handle(self, *args, version_id, days, record, **options):
        version = (ModelVersion.objects.filter(pk=version_id).first() if version_id is not None
                   else model_version_active())
        if version is None:
            raise CommandError("No such model version." if version_id is not None else "No model version is active.")
        days = settings.CXR_MONITOR_WINDOW_DAYS if days is None else days
        report = model_version_monitoring_report(model_version=version, days=days or None)
        window = f"the last {days} days" if days else "all time"
        self.stdout.write(f"{version}, {window}: {report.results} results, {report.confirmed} confirmed by feedback")
        if report.problem:
            self.stdout.write(report.problem)
        if report.predicted_mix and report.results:
            self.stdout.write("Called by the model, here against validation: " + ", ".join(
                f"{name} {site}/{report.results} against {validation}/{report.reference.n}"
                for name, site, validation in report.predicted_mix))
        for breach in report.breaches:
            self.stdout.write(self.style.WARNING(
                f"Validation already breaks {breach.code}: {breach.reference_hits}/{breach.reference_n} against the "
                f"limit {breach.limit:.0%}; the comparisons with validation cannot show this failure."))
        for check in report.checks:
            held_to = f"limit {check.limit:.0%}" if check.limit is not None else \
                f"{check.reference_hits}/{check.reference_n} on validation"
            if check.strata is not None and check.site_n:
                held_to += f" ({check.reference_rate:.1%} at this site's mix of predicted classes)"
            p_value = "-" if check.p_value is None else f"p={check.p_value:.2g}"
            self.stdout.write(f"  {check.status:8} {check.code:26} {check.site_hits}/{check.site_n} here, "
                              f"{held_to}, {p_value}")
        if record:
            changed = model_version_monitor_record(report=report)
            self.stdout.write("Recorded" + (" (the verdict changed)." if changed else "."))
        style = self.style.ERROR if report.status == "alarm" else self.style.SUCCESS
        self.stdout.write(style(f"Status: {report.status}"))
