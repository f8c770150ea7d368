#!/bin/sh
# Runs once, when the postgres container initialises its data volume: Airflow's
# metadata gets a database of its own, and Grafana a login that can read the marts
# only (a member of spancost_bi, which `spancost db init` grants on schema marts).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v grafana_password="$SPANCOST_GRAFANA_DB_PASSWORD" <<'SQL'
create database airflow;
create role spancost_bi nologin;
create role grafana login password :'grafana_password' in role spancost_bi;
SQL
