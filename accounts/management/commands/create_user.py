import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.roles import RoleName
from accounts.services import user_create


class Command(BaseCommand):
    help = ("Create a user with a role (clinician, administrator or auditor). The password is typed at a prompt, "
            "or read from the first line of standard input with --password-stdin; never from the command line, "
            "where other users of the machine and the shell history would see it.")
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[role.value for role in RoleName])
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password from standard input, e.g. from a secret store: ... | create_user NAME --role R --password-stdin")
        parser.add_argument("--email", default="")
        parser.add_argument("--if-missing", action="store_true", help="Do nothing if the user already exists.")

    def handle(self, *args, username, role, password_stdin, email, if_missing, **options):
        if User.objects.filter(username=username).exists():
            if if_missing:
                self.stdout.write(f"User {username} already exists.")
                return
            raise CommandError(f"User {username} already exists.")
        password = self._read_password(stdin=options.get("stdin") or sys.stdin, from_stdin=password_stdin)
        try:
            user = user_create(username=username, role=RoleName(role), password=password, email=email)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(self.style.SUCCESS(f"Created {user.role_name} {user.username}."))

    def _read_password(self, *, stdin, from_stdin: bool) -> str:
        if from_stdin:
            password = stdin.readline().rstrip("\r\n")
        elif stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password (again): ") != password:
                raise CommandError("The two passwords differ.")
        else:
            raise CommandError("No terminal to prompt for the password: pipe it in with --password-stdin.")
        if not password:
            raise CommandError("The password is empty.")
        return password
