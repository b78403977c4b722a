from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.roles import TWO_FACTOR_ROLES, RoleName
from accounts.services import user_create

DEMO_USERS = [
    ("clinician", RoleName.CLINICIAN, "demo-clinician-pass"),
    ("admin", RoleName.ADMINISTRATOR, "demo-admin-pass-2026"),
    ("auditor", RoleName.AUDITOR, "demo-auditor-pass"),
]


class Command(BaseCommand):
    help = "Create one demo user per role for local development (refused when DEBUG is off)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Demo users are only for local development (DEBUG is off).")
        self.stdout.write("Demo users (local development only):")
        for username, role, password in DEMO_USERS:
            user = User.objects.filter(username=username).first()
            if user is None:
                user = user_create(username=username, role=role, password=password, validate=False)
            self.stdout.write(f"  {role.value:<14} username: {username:<10} password: {password}")
            if role in TWO_FACTOR_ROLES:
                # Administrators and auditors need a TOTP code: add this key to any authenticator app.
                device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
                if device is None:
                    device = TOTPDevice.objects.create(user=user, name="demo authenticator", confirmed=True)
                self.stdout.write(f"  {'':<14} TOTP: {device.config_url}")
