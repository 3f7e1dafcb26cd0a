#!/bin/bash
# First start: initdb in $PGDATA, the superuser's password from POSTGRES_PASSWORD (password auth
# over TCP; without it, trust), then database $POSTGRES_DB with the postgis extension.
# Later starts: the data is there, postgres starts as is.
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=gis}"
if [ "${1:-postgres}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    auth=scram-sha-256
    pwfile=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host="$auth" --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
  else
    auth=trust
    echo "postgis-entrypoint: POSTGRES_PASSWORD is empty: TCP connections are trusted" >&2
    initdb -D "$PGDATA" -U "$POSTGRES_USER" -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=trust >/dev/null
  fi
  printf 'host all all 0.0.0.0/0 %s\nhost all all ::/0 %s\n' "$auth" "$auth" >> "$PGDATA/pg_hba.conf"
  # Temporary server on the Unix socket only, for the setup SQL.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
  psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres <<SQL
SELECT format('CREATE DATABASE %I', '$POSTGRES_DB') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$POSTGRES_DB')\gexec
SQL
  psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
    -c 'CREATE EXTENSION IF NOT EXISTS postgis'
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgis-entrypoint: initialised $PGDATA, database $POSTGRES_DB with postgis" >&2
fi
if [ "${1:-postgres}" = postgres ]; then
  shift || true
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
fi
exec "$@"
