#!/usr/bin/env bash
# Start a real single-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) for the `slurm` test tier.
#
# Usage: bash .ci/slurm/up.sh          (as root; idempotent: a cluster that already answers is left alone)
#        bash .ci/slurm/down.sh        stops everything again
# Runtime: ~20 s once the Debian packages are installed (the first run installs them with apt-get).
# The machine has no systemd, so every daemon is started by hand. State lives in $SOFTCLIP_SLURM_DIR
# (default /tmp/softclip-slurm); a fresh cluster numbers jobs from 1 again, so tests use fresh submitit folders.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${SOFTCLIP_SLURM_DIR:-/tmp/softclip-slurm}"
HOST="$(hostname -s)"
CTLD_PORT="${SOFTCLIP_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SOFTCLIP_SLURMD_PORT:-6818}"
DBD_PORT="${SOFTCLIP_SLURMDBD_PORT:-6819}"
DB_PASS="softclip-ci"
MYSQL_SOCK=/run/mysqld/mysqld.sock

log() { echo "[slurm-up] $*"; }

if [ "$(id -u)" != 0 ]; then echo "up.sh must run as root" >&2; exit 1; fi

cluster_ready() {
  timeout 5 scontrol ping 2>/dev/null | grep -q UP &&
    timeout 5 sinfo -h -N -o '%t' 2>/dev/null | grep -q -E '^(idle|mix|alloc)' &&
    timeout 5 sacctmgr -n list cluster format=cluster 2>/dev/null | grep -q softclip
}

if command -v scontrol >/dev/null && cluster_ready; then log "already up"; exit 0; fi

# --- packages ------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null ||
  ! command -v mariadbd >/dev/null; then
  log "installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
fi

mkdir -p "$DIR"/{run,spool,state,log}

# --- munge ---------------------------------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 700 /etc/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- MariaDB (accounting database for slurmdbd; sacct is how submitit reads job states) -----------------
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mariadb-admin --socket="$MYSQL_SOCK" ping >/dev/null 2>&1; then
  if [ ! -d "$DIR/mysql/mysql" ]; then
    log "initialising MariaDB in $DIR/mysql"
    mkdir -p "$DIR/mysql" && chown mysql:mysql "$DIR/mysql"
    mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
  fi
  log "starting mariadbd"
  nohup mariadbd --user=mysql --datadir="$DIR/mysql" --socket="$MYSQL_SOCK" --bind-address=127.0.0.1 \
    --port=3306 --pid-file="$DIR/mysql/mariadb.pid" --innodb-buffer-pool-size=64M \
    --log-error="$DIR/mysql/mariadb.err" >/dev/null 2>&1 &
  for _ in $(seq 100); do mariadb-admin --socket="$MYSQL_SOCK" ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
mariadb --socket="$MYSQL_SOCK" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# --- configuration -------------------------------------------------------------------------------------
CPUS="$(nproc)"
MEM_MB="$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')"
render() {
  sed -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
    -e "s|@DB_PASS@|$DB_PASS|g" "$1" >"$2"
}
mkdir -p /etc/slurm
render "$HERE/slurm.conf.in" /etc/slurm/slurm.conf
render "$HERE/slurmdbd.conf.in" /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf
chmod 644 /etc/slurm/slurm.conf
sed -i "s|^AccountingStoragePort=.*||" /etc/slurm/slurm.conf
echo "AccountingStoragePort=$DBD_PORT" >>/etc/slurm/slurm.conf

# --- daemons -------------------------------------------------------------------------------------------
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! alive "$DIR/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  slurmdbd
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
fi
sacctmgr -n list cluster format=cluster | grep -q softclip || sacctmgr -i add cluster softclip >/dev/null
if ! alive "$DIR/run/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld
fi
if ! alive "$DIR/run/slurmd.pid"; then
  log "starting slurmd"
  slurmd
fi
for _ in $(seq 150); do cluster_ready && break; sleep 0.2; done
if ! cluster_ready; then
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 2
fi
if ! cluster_ready; then
  echo "SLURM did not come up; logs in $DIR/log" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  exit 1
fi
log "up: $(sinfo -h -N -o '%N %c CPUs %m MB %t')"
