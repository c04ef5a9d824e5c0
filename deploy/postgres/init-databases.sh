#!/bin/sh
# One role and one database per Uptake service (each service owns its own tables and
# no service reads another's). Run once by the postgres image on an empty data volume
# (/docker-entrypoint-initdb.d). Passwords come from <SERVICE>_DB_PASSWORD.
set -eu

for service in ingest health playbooks notify; do
    var="$(echo "$service" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
    password="$(printenv "$var" || true)"
    if [ -z "$password" ]; then
        echo "init-databases: $var is not set" >&2
        exit 1
    fi
    # psql variables (:'pw') quote the password; the role owns its database, so it may
    # create tables in its public schema (PostgreSQL 15+ no longer lets everyone).
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -v svc="$service" -v pw="$password" <<'SQL'
CREATE ROLE :"svc" LOGIN PASSWORD :'pw';
CREATE DATABASE :"svc" OWNER :"svc";
REVOKE ALL ON DATABASE :"svc" FROM PUBLIC;
SQL
    echo "init-databases: created database and role $service"
done
