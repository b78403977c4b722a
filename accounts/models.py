from django.contrib.auth.models import AbstractUser
from django.db import models
from rest_framework.authtoken.models import Token


class Role(models.Model):
    """One of the fixed roles (seeded by migration); see accounts.roles for what each may do."""

    name = models.CharField(max_length=32, unique=True)
    description = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    role = models.ForeignKey(Role, on_delete=models.PROTECT, null=True, blank=True, related_name="users")

    @property
    def role_name(self) -> str:
        return self.role.name if self.role_id else ""


class ApiTokenUse(models.Model):
    """When and from where an API token was last used; goes with the token when it is rotated or revoked."""

    token = models.OneToOneField(Token, on_delete=models.CASCADE, primary_key=True, related_name="use")
    last_used_at = models.DateTimeField()
    last_used_from = models.GenericIPAddressField(null=True, blank=True)
