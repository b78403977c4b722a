"""docker-compose.yml runs migrations as the owner and every other portal process as the application role."""

from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_portal_services_connect_as_the_application_role_and_migrate_as_the_owner():
    services = compose()["services"]
    portal = {name: service for name, service in services.items() if service.get("image", "").startswith("cxr-portal-")}
    assert {"web", "migrate", "worker-inference", "worker-default", "worker-training", "scheduler",
            "dicom-receiver"} <= set(portal)
    for name, service in portal.items():
        user = service["environment"]["DATABASE_URL"].split("://")[1].split(":")[0]
        assert user == ("cxr_owner" if name == "migrate" else "cxr_app"), name
    assert "grant_app_role cxr_app" in " ".join(services["migrate"]["command"])


def test_postgres_init_creates_both_roles_and_no_portal_process_is_superuser():
    services = compose()["services"]
    assert "POSTGRES_USER" not in services["postgres"]["environment"]
    assert any("init-roles.sh:/docker-entrypoint-initdb.d/" in volume for volume in services["postgres"]["volumes"])
    script = (PROJECT_ROOT / "deploy" / "postgres" / "init-roles.sh").read_text()
    assert "CREATE ROLE cxr_owner LOGIN" in script and "CREATE ROLE cxr_app LOGIN" in script
    assert "NOSUPERUSER" in script and "CREATE DATABASE cxr OWNER cxr_owner" in script
