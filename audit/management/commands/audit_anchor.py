from django.core.management.base import BaseCommand, CommandError

from audit.anchor_file import anchor_file_path
from audit.anchors import AuditChainBroken, audit_chain_anchor


class Command(BaseCommand):
    help = ("Append the audit chain's head (sequence, HMAC, time) to CXR_AUDIT_ANCHOR_FILE after checking the "
            "events since the last anchor. The scheduler does this every CXR_AUDIT_ANCHOR_EVERY_MINUTES.")

    def handle(self, *args, **options):
        try:
            anchor = audit_chain_anchor()
        except AuditChainBroken as error:
            raise CommandError(f"Not anchored: {error}") from None
        if anchor is None:
            self.stdout.write("Nothing new to anchor.")
            return
        self.stdout.write(self.style.SUCCESS(f"Anchored event #{anchor.sequence} in {anchor_file_path()}."))
