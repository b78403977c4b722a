from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from audit.services import audit_record

from .models import Role, User
from .roles import RoleName


@transaction.atomic
def user_create(
    *,
    username: str,
    role: RoleName,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    actor: User | None = None,
    validate: bool = True,
) -> User:
    user = User(username=username, email=email, first_name=first_name, last_name=last_name)
    user.role = Role.objects.get(name=RoleName(role).value)
    if validate:
        validate_password(password, user=user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    audit_record(
        actor=actor,
        action="user.create",
        target=user,
        details={"username": username, "role": user.role.name},
    )
    return user
