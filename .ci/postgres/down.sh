#!/usr/bin/env bash
# Stop the PostgreSQL server that .ci/postgres/up.sh started and remove its data (idempotent).
# Usage: bash .ci/postgres/down.sh [--keep-state]
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${SOFTCLIP_PG_DIR:-/tmp/softclip-postgres}"
BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)")"
if [ -s "$DIR/data/postmaster.pid" ]; then
  echo "[pg-down] stopping postgres"
  runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
fi
rm -f "$HERE/url"
if [ "${1:-}" != "--keep-state" ]; then rm -rf "$DIR"; fi
echo "[pg-down] done"
