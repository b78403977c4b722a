from django.core.management.base import BaseCommand, CommandError

from diagnosis.services.storage import storage_rotate_key


class Command(BaseCommand):
    help = ("Re-encrypt the image store under CXR_STORAGE_KEY. Set the new key as CXR_STORAGE_KEY and the old one "
            "in CXR_STORAGE_PREVIOUS_KEYS, restart, run this, then drop the old key (docs/operations.md, \"Key rotation\").")

    def handle(self, *args, **options):
        counts = storage_rotate_key()
        self.stdout.write(f"Re-encrypted {counts['re-encrypted']} files; {counts['current']} already under the new key.")
        if counts["unreadable"]:
            raise CommandError(f"{counts['unreadable']} files decrypt under none of the configured keys (see the log); "
                               "keep CXR_STORAGE_PREVIOUS_KEYS until they are explained.")
