#!/usr/bin/env bash
# Stop the single-node SLURM test cluster that .ci/slurm/up.sh started (idempotent) and remove its state.
# Usage: bash .ci/slurm/down.sh [--keep-state]
set -uo pipefail
DIR="${SOFTCLIP_SLURM_DIR:-/tmp/softclip-slurm}"

stop_pidfile() {
  local pidfile="$1" name="$2"
  [ -s "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "[slurm-down] stopping $name ($pid)"
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

scancel --user=root >/dev/null 2>&1 || true
stop_pidfile "$DIR/run/slurmd.pid" slurmd
stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
stop_pidfile "$DIR/run/slurmdbd.pid" slurmdbd
stop_pidfile "$DIR/mysql/mariadb.pid" mariadbd
if [ -s /run/munge/munged.pid ]; then stop_pidfile /run/munge/munged.pid munged; fi
if [ "${1:-}" != "--keep-state" ]; then rm -rf "$DIR"; fi
echo "[slurm-down] done"
