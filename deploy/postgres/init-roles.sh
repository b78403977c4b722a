#!/bin/sh
# Runs once, when the PostgreSQL volume is created (docker-entrypoint-initdb.d), as the superuser.
# Two roles: cxr_owner owns the database and runs `migrate`; cxr_app is what the web processes and
# workers connect as. After each migrate, `manage.py grant_app_role cxr_app` gives cxr_app read and
# write on the portal's tables but only SELECT and INSERT on the audit trail (docs/operations.md).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v owner_password="$CXR_DB_OWNER_PASSWORD" -v app_password="$CXR_DB_APP_PASSWORD" <<'SQL'
CREATE ROLE cxr_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE cxr_app LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE DATABASE cxr OWNER cxr_owner;
\connect cxr
ALTER SCHEMA public OWNER TO cxr_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE cxr FROM PUBLIC;
GRANT CONNECT ON DATABASE cxr TO cxr_app;
GRANT USAGE ON SCHEMA public TO cxr_app;
SQL
