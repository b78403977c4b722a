"""Class names shared by training, evaluation and the portal.

The model's output order is CLASS_NAMES; the portal shows DISPLAY_NAMES.
"""

CLASS_NAMES: tuple[str, ...] = ("covid", "normal", "pneumonia")

DISPLAY_NAMES: dict[str, str] = {
    "covid": "COVID-19",
    "normal": "No findings",
    "pneumonia": "Pneumonia",
}

POSITIVE_CLASS = "covid"
