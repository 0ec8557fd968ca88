#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the sweep storage tests (slurm tier) and write its URL.
#
# Usage: bash .ci/postgres/up.sh    (as root; idempotent)     bash .ci/postgres/down.sh stops it
# Runtime: ~5 s once Debian's postgresql is installed (installed with apt-get when absent).
# The cluster lives in $SOFTCLIP_PG_DIR (default /tmp/softclip-postgres), listens on 127.0.0.1:$SOFTCLIP_PG_PORT
# (default 55432); the URL `postgresql://softclip:softclip@127.0.0.1:PORT/softclip_test` is written to
# .ci/postgres/url, which the tests read.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${SOFTCLIP_PG_DIR:-/tmp/softclip-postgres}"
PORT="${SOFTCLIP_PG_PORT:-55432}"
URL="postgresql://softclip:softclip@127.0.0.1:$PORT/softclip_test"

if [ "$(id -u)" != 0 ]; then echo "up.sh must run as root" >&2; exit 1; fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "[pg-up] installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
as_pg() { runuser -u postgres -- "$@"; }

if ! as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  if [ ! -s "$DIR/data/PG_VERSION" ]; then
    mkdir -p "$DIR" && chown postgres:postgres "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >"$DIR/initdb.log"
  fi
  mkdir -p "$DIR/sock" && chown postgres:postgres "$DIR/sock"
  echo "[pg-up] starting postgres on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PORT -k $DIR/sock -c fsync=off -c max_connections=200" start >/dev/null
fi
psql_pg() { as_pg psql -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname='softclip'" | grep -q 1 ||
  psql_pg -c "CREATE ROLE softclip LOGIN PASSWORD 'softclip'"
psql_pg -c "SELECT 1 FROM pg_database WHERE datname='softclip_test'" | grep -q 1 ||
  psql_pg -c "CREATE DATABASE softclip_test OWNER softclip"
echo "$URL" >"$HERE/url"
echo "[pg-up] up: $URL (written to .ci/postgres/url)"
