"""Show a service's ValidationError on the form that called it."""

from django.core.exceptions import ValidationError


def form_add_service_errors(form, error: ValidationError, *, field: str | None = None) -> None:
    """Attach each message (services raise them translated) to its field when the form has it, else to ``field``
    (None: the whole form)."""
    if hasattr(error, "error_dict"):
        for name, messages in error.message_dict.items():
            form.add_error(name if name in form.fields else None, messages)
    else:
        form.add_error(field, error.messages)
