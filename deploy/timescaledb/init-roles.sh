#!/bin/sh
# Runs once, when the TimescaleDB container creates its data directory: the login roles of
# the API (and ingest) replicas and of Grafana, with their passwords. `callpulse migrate`
# then gives them their privileges (and would create them, without a password, if missing).
# Change a password later with ALTER ROLE (docs/operations.md, "Rotate keys").
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v api_password="$CALLPULSE_API_DB_PASSWORD" \
    -v grafana_password="$CALLPULSE_GRAFANA_DB_PASSWORD" <<'EOSQL'
CREATE ROLE callpulse_api LOGIN PASSWORD :'api_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
CREATE ROLE callpulse_grafana LOGIN PASSWORD :'grafana_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
EOSQL
