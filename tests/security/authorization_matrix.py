"""Who may do what: one row per URL pattern and HTTP method, with the status each kind of user gets.

tests/security/test_authorization_matrix.py requests every row as each of these users and fails when
a route of the project has no row here (its message names the row to add), when a row names a route
that no longer exists, or when an outcome differs. Placeholders in ``url`` are ids of records made by
the test (tests/security/test_authorization_matrix.py::records):

    {patient} {study} {alert} {user} {model_version}

The study belongs to "clinician" (who uploaded it); "second_clinician" is another clinician of the
same hospital, who shares the patients (there is no per-clinician ownership). Administrators never see
patient data; auditors read everything and change nothing.

Pages answer anonymous users with 302 (to the sign-in page), the API with 401.
"""

from dataclasses import dataclass

ROLES = ("anonymous", "clinician", "second_clinician", "administrator", "auditor")


@dataclass(frozen=True)
class Row:
    route: str  # the pattern as Django lists it, e.g. "studies/<int:study_id>/"
    method: str
    url: str
    anonymous: int
    clinician: int
    second_clinician: int
    administrator: int
    auditor: int
    # Form fields to send with a POST, as (name, value) pairs; values may hold the placeholders above,
    # and "<png>" stands for an uploaded chest X-ray. A POST with no fields would leave page forms unbound.
    data: tuple = ()

    def expected(self, role: str) -> int:
        return getattr(self, role)


R = Row
ACK = (("next", "/alerts/"),)
BLANK_PATIENT = (("mrn", ""), ("name", ""))
BLANK_UPLOAD = (("accession_number", ""),)
BLANK_USER = (("username", ""),)
UPLOAD = (("patient", "{patient}"), ("file", "<png>"))
SET_LANGUAGE = (("language", "es"), ("next", "/worklist/"))
RETIRE = (("reason", "superseded"),)

MATRIX: list[Row] = [
    # --- sign-in --------------------------------------------------------------------------------
    #   route                                                method  url                                           anon clin clin2 admin audit
    R("accounts/login/",                                     "GET",  "/accounts/login/",                           200, 302, 302, 302, 302),
    R("accounts/logout/",                                    "POST", "/accounts/logout/",                          302, 302, 302, 302, 302),
    R("accounts/two-factor/",                                "GET",  "/accounts/two-factor/",                      302, 302, 302, 200, 200),
    R("accounts/two-factor/setup/",                          "GET",  "/accounts/two-factor/setup/",                302, 200, 200, 302, 302),
    # --- language picker (Django's set_language: anyone, signed in or not, may pick a language) ----
    R("i18n/setlang/",                                       "GET",  "/i18n/setlang/?next=/",                      302, 302, 302, 302, 302),
    R("i18n/setlang/",                                       "POST", "/i18n/setlang/",                             302, 302, 302, 302, 302, SET_LANGUAGE),
    # --- clinical pages ---------------------------------------------------------------------------
    R("",                                                    "GET",  "/",                                          302, 302, 302, 302, 302),
    R("worklist/",                                           "GET",  "/worklist/",                                 302, 200, 200, 403, 200),
    R("worklist/statuses/",                                  "GET",  "/worklist/statuses/?ids={study}",            302, 200, 200, 403, 200),
    R("worklist/export.csv",                                 "GET",  "/worklist/export.csv",                       302, 200, 200, 403, 200),
    R("patients/",                                           "GET",  "/patients/",                                 302, 200, 200, 403, 200),
    R("patients/new/",                                       "GET",  "/patients/new/",                             302, 200, 200, 403, 403),
    R("patients/new/",                                       "POST", "/patients/new/",                             302, 400, 400, 403, 403, BLANK_PATIENT),
    R("patients/<int:patient_id>/",                          "GET",  "/patients/{patient}/",                       302, 200, 200, 403, 200),
    R("patients/<int:patient_id>/upload/",                   "GET",  "/patients/{patient}/upload/",                302, 200, 200, 403, 403),
    R("patients/<int:patient_id>/upload/",                   "POST", "/patients/{patient}/upload/",                302, 400, 400, 403, 403, BLANK_UPLOAD),
    R("studies/<int:study_id>/",                             "GET",  "/studies/{study}/",                          302, 200, 200, 403, 200),
    R("studies/<int:study_id>/image.png",                    "GET",  "/studies/{study}/image.png",                 302, 200, 200, 403, 200),
    R("studies/<int:study_id>/heatmap.png",                  "GET",  "/studies/{study}/heatmap.png",               302, 200, 200, 403, 200),
    R("studies/<int:study_id>/report.pdf",                   "GET",  "/studies/{study}/report.pdf",                302, 200, 200, 403, 200),
    R("studies/<int:study_id>/feedback/",                    "POST", "/studies/{study}/feedback/",                 302, 400, 400, 403, 403),
    R("alerts/",                                             "GET",  "/alerts/",                                   302, 200, 200, 403, 200),
    R("alerts/<int:alert_id>/acknowledge/",                  "POST", "/alerts/{alert}/acknowledge/",               302, 302, 302, 403, 403, ACK),
    R("alerts/deliveries/",                                  "GET",  "/alerts/deliveries/",                        302, 403, 403, 200, 403),
    R("results/deliveries/",                                 "GET",  "/results/deliveries/",                       302, 403, 403, 200, 403),
    R("models/",                                             "GET",  "/models/",                                   302, 403, 403, 200, 200),
    R("models/<int:version_id>/monitoring/",                 "GET",  "/models/{model_version}/monitoring/",        302, 403, 403, 200, 200),
    R("models/<int:model_version_id>/activate/",             "POST", "/models/{model_version}/activate/",          302, 403, 403, 302, 403),
    R("models/<int:model_version_id>/retire/",               "GET",  "/models/{model_version}/retire/",            302, 403, 403, 200, 403),
    R("models/<int:model_version_id>/retire/",               "POST", "/models/{model_version}/retire/",            302, 403, 403, 302, 403, RETIRE),
    R("models/site/",                                        "GET",  "/models/site/",                              302, 403, 403, 200, 200),
    # The portal's icon, for anyone (a page that names no icon, or the API's JSON in a browser).
    R("favicon.ico",                                         "GET",  "/favicon.ico",                               301, 301, 301, 301, 301),
    R("models/site/import/",                                 "POST", "/models/site/import/",                       302, 403, 403, 302, 403,
      (("root", "no-such-folder"),)),
    R("models/site/adapt/",                                  "POST", "/models/site/adapt/",                        302, 403, 403, 302, 403,
      (("steps", "no-such-step"),)),
    R("models/rollback/",                                    "POST", "/models/rollback/",                          302, 403, 403, 302, 403),
    R("models/<int:model_version_id>/compare/",              "GET",  "/models/{model_version}/compare/",           302, 403, 403, 200, 200),
    R("models/<int:model_version_id>/promote/",              "POST", "/models/{model_version}/promote/",           302, 403, 403, 302, 403),
    R("models/<int:model_version_id>/shadow/",               "POST", "/models/{model_version}/shadow/",            302, 403, 403, 302, 403,
      (("enabled", "0"),)),
    # --- administration ---------------------------------------------------------------------------
    R("administration/users/",                               "GET",  "/administration/users/",                     302, 403, 403, 200, 403),
    R("administration/users/new/",                           "GET",  "/administration/users/new/",                 302, 403, 403, 200, 403),
    R("administration/users/new/",                           "POST", "/administration/users/new/",                 302, 403, 403, 400, 403, BLANK_USER),
    R("administration/users/<int:user_id>/",                 "GET",  "/administration/users/{user}/",              302, 403, 403, 200, 403),
    R("administration/users/<int:user_id>/role/",            "POST", "/administration/users/{user}/role/",         302, 403, 403, 302, 403, (("role", "auditor"),)),
    R("administration/users/<int:user_id>/password/",        "POST", "/administration/users/{user}/password/",     302, 403, 403, 400, 403),
    R("administration/users/<int:user_id>/deactivate/",      "POST", "/administration/users/{user}/deactivate/",   302, 403, 403, 302, 403),
    R("administration/users/<int:user_id>/reactivate/",      "POST", "/administration/users/{user}/reactivate/",   302, 403, 403, 302, 403),
    R("administration/users/<int:user_id>/unlock/",          "POST", "/administration/users/{user}/unlock/",       302, 403, 403, 302, 403),
    R("administration/users/<int:user_id>/two-factor-reset/", "POST", "/administration/users/{user}/two-factor-reset/", 302, 403, 403, 302, 403),
    R("administration/users/<int:user_id>/token-revoke/",    "POST", "/administration/users/{user}/token-revoke/", 302, 403, 403, 302, 403),
    # --- auditor pages ----------------------------------------------------------------------------
    R("audit/events/",                                       "GET",  "/audit/events/",                             302, 403, 403, 403, 200),
    R("audit/events/export.csv",                             "GET",  "/audit/events/export.csv",                   302, 403, 403, 403, 200),
    R("audit/predictions/",                                  "GET",  "/audit/predictions/",                        302, 403, 403, 403, 200),
    R("audit/predictions/export.csv",                        "GET",  "/audit/predictions/export.csv",              302, 403, 403, 403, 200),
    # --- operations: probes and metrics for the hospital's monitoring; the dashboard for administrators --
    R("health/live",                                         "GET",  "/health/live",                               200, 200, 200, 200, 200),
    # Not ready in the test database: no inference worker has written a heartbeat.
    R("health/ready",                                        "GET",  "/health/ready",                              503, 503, 503, 503, 503),
    # From an allowed network (the test client is 127.0.0.1) or with the metrics token, whoever is signed in.
    R("metrics",                                             "GET",  "/metrics",                                   200, 200, 200, 200, 200),
    R("operations/",                                         "GET",  "/operations/",                               302, 403, 403, 200, 403),
    # --- API --------------------------------------------------------------------------------------
    R("api/",                                                "GET",  "/api/",                                      401, 200, 200, 200, 200),
    # STOW-RS takes tokens only (a signed-in browser session is anonymous there); roles with a token:
    # tests/diagnosis/test_dicomweb.py::test_only_clinical_accounts_may_store.
    R("dicomweb/studies",                                    "POST", "/dicomweb/studies",                          401, 401, 401, 401, 401),
    R("api/auth/token/",                                     "POST", "/api/auth/token/",                           400, 400, 400, 400, 400),
    R("api/auth/token/",                                     "DELETE", "/api/auth/token/",                         401, 204, 204, 204, 204),
    R("api/schema/",                                         "GET",  "/api/schema/",                               401, 200, 200, 200, 200),
    R("api/docs/",                                           "GET",  "/api/docs/",                                 401, 200, 200, 200, 200),
    R("api/patients/",                                       "GET",  "/api/patients/",                             401, 200, 200, 403, 200),
    R("api/patients/",                                       "POST", "/api/patients/",                             401, 400, 400, 403, 403),
    R("api/patients/<int:pk>/",                              "GET",  "/api/patients/{patient}/",                   401, 200, 200, 403, 200),
    R("api/studies/",                                        "GET",  "/api/studies/",                              401, 200, 200, 403, 200),
    R("api/studies/",                                        "POST", "/api/studies/",                              401, 201, 201, 403, 403, UPLOAD),
    R("api/studies/<int:pk>/",                               "GET",  "/api/studies/{study}/",                      401, 200, 200, 403, 200),
    R("api/studies/<int:pk>/prediction/",                    "GET",  "/api/studies/{study}/prediction/",           401, 200, 200, 403, 200),
    R("api/studies/<int:pk>/feedback/",                      "GET",  "/api/studies/{study}/feedback/",             401, 200, 200, 403, 200),
    R("api/studies/<int:pk>/feedback/",                      "POST", "/api/studies/{study}/feedback/",             401, 400, 400, 403, 403),
    R("api/studies/<int:pk>/fhir/",                          "GET",  "/api/studies/{study}/fhir/",                 401, 200, 200, 403, 200),
    R("api/studies/<int:pk>/report/",                        "GET",  "/api/studies/{study}/report/",               401, 200, 200, 403, 200),
    R("api/alerts/",                                         "GET",  "/api/alerts/",                               401, 200, 200, 403, 200),
    R("api/alerts/<int:pk>/acknowledge/",                    "POST", "/api/alerts/{alert}/acknowledge/",           401, 200, 200, 403, 403),
    R("api/model-versions/agreement/",                       "GET",  "/api/model-versions/agreement/",             401, 200, 200, 200, 200),
]
