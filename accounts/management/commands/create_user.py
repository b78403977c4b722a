from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.roles import RoleName
from accounts.services import user_create


class Command(BaseCommand):
    help = "Create a user with a role (clinician, administrator or auditor)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[role.value for role in RoleName])
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--if-missing", action="store_true", help="Do nothing if the user already exists.")

    def handle(self, *args, username, role, password, email, if_missing, **options):
        if User.objects.filter(username=username).exists():
            if if_missing:
                self.stdout.write(f"User {username} already exists.")
                return
            raise CommandError(f"User {username} already exists.")
        try:
            user = user_create(username=username, role=RoleName(role), password=password, email=email)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(self.style.SUCCESS(f"Created {user.role_name} {user.username}."))
