import re

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
AUDIT_TABLE = "audit_auditevent"
# Written only by `migrate`, which runs as the owner.
OWNER_ONLY_TABLES = ("django_migrations",)


def grant_statements(role: str) -> list[str]:
    role = connection.ops.quote_name(role)
    audit = connection.ops.quote_name(AUDIT_TABLE)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        # The audit trail: read and append, nothing else (no UPDATE, DELETE, TRUNCATE or TRIGGER).
        f"REVOKE ALL ON {audit} FROM {role}",
        f"GRANT SELECT, INSERT ON {audit} TO {role}",
    ]
    for table in OWNER_ONLY_TABLES:
        table = connection.ops.quote_name(table)
        statements += [f"REVOKE ALL ON {table} FROM {role}", f"GRANT SELECT ON {table} TO {role}"]
    return statements


class Command(BaseCommand):
    help = ("Give the application's database role what the portal needs and no more: read and write on its "
            "tables, only SELECT and INSERT on the audit trail. Run it as the owner of the tables after every "
            "`migrate` (docker-compose.yml's migrate service does). The role must exist, log in, and be neither "
            "a superuser nor the owner: see docs/operations.md, \"Database roles\".")

    def add_arguments(self, parser):
        parser.add_argument("role", help="the role the web processes and workers connect as, e.g. cxr_app")

    def handle(self, *args, role: str, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Database roles need PostgreSQL.")
        if not ROLE_NAME.match(role):
            raise CommandError("Role names are lower-case letters, digits and underscores.")
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [role])
            found = cursor.fetchone()
            if found is None:
                raise CommandError(f"Role {role} does not exist: CREATE ROLE {role} LOGIN PASSWORD '...' (as a superuser).")
            if any(found):
                raise CommandError(f"Role {role} is a superuser or bypasses row security: it could rewrite the audit trail.")
            cursor.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = %s", [AUDIT_TABLE])
            owner = cursor.fetchone()
            if owner is None:
                raise CommandError("The audit table does not exist yet: run `manage.py migrate` first.")
            cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [role, owner[0]])
            if cursor.fetchone()[0]:
                raise CommandError(f"Role {role} owns the tables or is a member of their owner {owner[0]}; "
                                   "the application must connect as another role.")
            with transaction.atomic():
                for statement in grant_statements(role):
                    cursor.execute(statement)
        self.stdout.write(self.style.SUCCESS(f"Role {role}: read and write on the portal's tables, SELECT and INSERT only on {AUDIT_TABLE}."))
