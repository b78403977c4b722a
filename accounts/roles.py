"""The three roles and what each may do: the one place permissions are decided.

Views, API endpoints and services ask ``user_can(user, Capability.X)``; nothing
else looks at a user's role to grant access. Deny by default: an inactive user,
an anonymous user or a user without a role can do nothing.
"""

from enum import StrEnum


class RoleName(StrEnum):
    CLINICIAN = "clinician"
    ADMINISTRATOR = "administrator"
    AUDITOR = "auditor"


class Capability(StrEnum):
    VIEW_CLINICAL = "view_clinical"  # patients, studies, predictions, images
    EDIT_CLINICAL = "edit_clinical"  # create patients, upload studies, record feedback
    MANAGE_USERS = "manage_users"
    MANAGE_MODELS = "manage_models"
    VIEW_AUDIT = "view_audit"  # audit trail and full prediction history


ROLE_CAPABILITIES: dict[RoleName, frozenset[Capability]] = {
    RoleName.CLINICIAN: frozenset({Capability.VIEW_CLINICAL, Capability.EDIT_CLINICAL}),
    # Administrators run the system; they do not read patient records.
    RoleName.ADMINISTRATOR: frozenset({Capability.MANAGE_USERS, Capability.MANAGE_MODELS}),
    # Auditors read everything that happened, clinical records included, and change nothing.
    RoleName.AUDITOR: frozenset({Capability.VIEW_CLINICAL, Capability.VIEW_AUDIT}),
}

ROLE_DESCRIPTIONS: dict[RoleName, str] = {
    RoleName.CLINICIAN: "Uploads chest X-rays, reviews results and records feedback.",
    RoleName.ADMINISTRATOR: "Manages users, roles and model versions.",
    RoleName.AUDITOR: "Reviews prediction history and the audit trail (read-only).",
}


# Roles that see the audit trail or manage other people's access must prove a second factor (TOTP).
TWO_FACTOR_ROLES: frozenset[RoleName] = frozenset({RoleName.ADMINISTRATOR, RoleName.AUDITOR})


def user_role(user) -> RoleName | None:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    role = getattr(user, "role", None)
    if role is None:
        return None
    return RoleName(role.name)


def user_can(user, capability: Capability) -> bool:
    role = user_role(user)
    if role is None:
        return False
    return capability in ROLE_CAPABILITIES[role]


def user_requires_two_factor(user) -> bool:
    return user_role(user) in TWO_FACTOR_ROLES
