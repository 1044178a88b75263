#!/bin/sh
# Runs once, when the postgres container initialises its data directory: the least-privilege login role
# the mana-ai processes use. Its grants are applied by the compose service `grants` after `migrate`.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v role_password="$MANA_AI_APP_PASSWORD" <<'SQL'
CREATE ROLE mana_ai_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'role_password';
SQL
