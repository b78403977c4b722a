from django.core.management.base import BaseCommand, CommandError

from audit.anchor_file import anchor_file_path
from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = ("Recompute the audit trail's keyed hash chain, compare it with the anchors outside the database "
            "(CXR_AUDIT_ANCHOR_FILE) and name what was found: edited, relinked, gap, rewritten, tail_deleted, "
            "truncated or anchor_forged.")

    def handle(self, *args, **options):
        result = audit_chain_verify()
        if not result.valid:
            where = f" at event #{result.first_broken_sequence}" if result.first_broken_sequence else ""
            raise CommandError(
                f"Audit chain broken{where} [{result.finding}]: {result.reason} "
                f"({result.checked} events before it verified, {result.anchors_checked} anchors matched)."
            )
        self.stdout.write(self.style.SUCCESS(
            f"Audit chain intact: {result.checked} events verified, {result.anchors_checked} anchors matched "
            f"({anchor_file_path()})."
        ))
