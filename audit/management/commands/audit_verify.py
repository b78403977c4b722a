from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Recompute the audit trail's hash chain and name the first broken link."

    def handle(self, *args, **options):
        result = audit_chain_verify()
        if not result.valid:
            raise CommandError(
                f"Audit chain broken at event #{result.first_broken_sequence}: {result.reason} "
                f"({result.checked} events before it verified)."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {result.checked} events verified."))
