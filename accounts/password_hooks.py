"""Django tells every configured password validator when a password changed (AbstractBaseUser.save);
this one ends the user's sessions and API token then, whatever changed it: an administrator's reset,
`manage.py changepassword`, or any later form."""

from .services import user_sessions_end


class SessionsEndOnPasswordChange:
    def validate(self, password, user=None):
        return None

    def password_changed(self, password, user=None):
        if user is not None and user.pk is not None:
            user_sessions_end(user=user, reason="password_change")

    def get_help_text(self):
        return ""
