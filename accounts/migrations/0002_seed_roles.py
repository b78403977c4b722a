from django.db import migrations

ROLES = {
    "clinician": "Uploads chest X-rays, reviews results and records feedback.",
    "administrator": "Manages users, roles and model versions.",
    "auditor": "Reviews prediction history and the audit trail (read-only).",
}


def seed_roles(apps, schema_editor):
    Role = apps.get_model("accounts", "Role")
    for name, description in ROLES.items():
        Role.objects.update_or_create(name=name, defaults={"description": description})


def remove_roles(apps, schema_editor):
    apps.get_model("accounts", "Role").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(seed_roles, remove_roles)]
