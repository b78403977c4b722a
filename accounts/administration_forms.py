from django import forms
from django.utils.translation import gettext_lazy as _

from .roles import RoleName

ROLE_CHOICES = [(role.value, role.value.capitalize()) for role in RoleName]


class _PasswordPair(forms.Form):
    password1 = forms.CharField(label=_("Password"), widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}), strip=False)
    password2 = forms.CharField(label=_("Password again"), widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}), strip=False)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password1") and cleaned.get("password1") != cleaned.get("password2"):
            self.add_error("password2", _("The two passwords differ."))
        return cleaned


class UserCreateForm(_PasswordPair):
    username = forms.CharField(label=_("Username"), max_length=150)
    first_name = forms.CharField(label=_("First name"), max_length=150, required=False)
    last_name = forms.CharField(label=_("Last name"), max_length=150, required=False)
    email = forms.EmailField(label=_("E-mail"), required=False)
    role = forms.ChoiceField(label=_("Role"), choices=ROLE_CHOICES)
    field_order = ["username", "first_name", "last_name", "email", "role", "password1", "password2"]


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=ROLE_CHOICES)


class PasswordResetForm(_PasswordPair):
    pass


class UserSearchForm(forms.Form):
    q = forms.CharField(label=_("Username"), required=False, max_length=150)
