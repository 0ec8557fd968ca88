#!/usr/bin/env bash
# Run a command with the SLURM and PostgreSQL binaries hidden: a private mount namespace (`unshare -m`) in which
# /dev/null is bind-mounted over each one that exists. Proves the unit tier needs no service a fresh machine lacks.
#
# Usage: bash .ci/hidden.sh COMMAND [ARG ...]     (as root; the mounts vanish with the namespace)
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "hidden.sh must run as root (it needs a private mount namespace)" >&2; exit 1; fi

NAMES="srun sbatch salloc squeue scancel sacct sacctmgr scontrol sinfo sstat slurmctld slurmd slurmdbd slurmstepd
munge munged unmunge mariadbd mysqld mariadb mysql psql postgres pg_ctl pg_ctlcluster pg_isready initdb createdb"
targets=()
for name in $NAMES; do
  while IFS= read -r path; do targets+=("$(readlink -f "$path")"); done < <(type -ap "$name" 2>/dev/null || true)
done
for path in /usr/lib/postgresql/*/bin/* /usr/sbin/slurm* /usr/sbin/munged; do
  [ -f "$path" ] && targets+=("$(readlink -f "$path")")
done
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | sort -u | grep -v '^$' || true)

exec unshare -m bash -c '
  set -euo pipefail
  mount --make-rprivate /
  for path in "${@:2:$1}"; do mount --bind /dev/null "$path"; done
  shift $(( $1 + 1 ))
  for name in srun sbatch scontrol psql postgres pg_ctl; do
    if command -v "$name" >/dev/null 2>&1 && [ -x "$(command -v "$name")" ] && [ ! -c "$(readlink -f "$(command -v "$name")")" ]; then
      echo "[hidden] $name is still runnable" >&2; exit 1
    fi
  done
  echo "[hidden] SLURM and PostgreSQL hidden ('"${#targets[@]}"' binaries masked); running: $*"
  exec "$@"
' hidden "${#targets[@]}" "${targets[@]}" "$@"
