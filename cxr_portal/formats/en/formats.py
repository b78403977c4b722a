# One date format on every page, the PDF and e-mail, in every language (ISO order: never read as day or month
# first by mistake). Decimal and thousand separators stay the language's own (Django's locale formats).
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
DATE_INPUT_FORMATS = ["%Y-%m-%d"]
