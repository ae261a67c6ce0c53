#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for trying `hydra/launcher=submitit_slurm`
# sweeps without a cluster (and for tests/test_slurm.py).
#
#   scripts/slurm_local.sh install   # apt-get install slurm-wlm munge (root; Debian/Ubuntu)
#   scripts/slurm_local.sh start     # munged + slurmctld + slurmd in the background
#   export SLURM_CONF=$MCL_SLURM_DIR/slurm.conf   # (start prints this line)
#   srun hostname
#   scripts/slurm_local.sh stop
#
# Two clusters can coexist with different MCL_SLURM_DIR and MCL_SLURM_PORT.
# Everything (config, state, logs, munge socket) lives in $MCL_SLURM_DIR (default
# /tmp/mcl-slurm), so nothing in /etc is changed. The node offers this host's CPUs and most of its
# memory to one partition, `debug`. No cgroups (containers often have none): processes are tracked
# by pid, which is enough for single-node tests but does not confine a job's CPUs or memory.
set -euo pipefail

DIR="${MCL_SLURM_DIR:-/tmp/mcl-slurm}"
HOST="$(hostname -s)"
PORT="${MCL_SLURM_PORT:-6817}"   # slurmctld's port; slurmd takes the next one

die() { echo "slurm_local: $*" >&2; exit 1; }

install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    echo "slurm_local: slurm-wlm and munge are installed"; return
  fi
  [ "$(id -u)" = 0 ] || die "installing needs root: sudo apt-get install -y slurm-wlm munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
  echo "slurm_local: installed slurm-wlm and munge"
}

write_conf() {
  local cpus mem_mb user
  cpus="$(nproc)"
  mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  user="$(id -un)"
  mkdir -p "$DIR"/{state,spool,log,munge}
  cat >"$DIR/slurm.conf" <<EOF
# written by scripts/slurm_local.sh: a one-node cluster on $HOST
ClusterName=mcl-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  command -v slurmctld >/dev/null || die "slurm-wlm is not installed; run: $0 install"
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    echo "export SLURM_CONF=$DIR/slurm.conf"; return
  fi
  write_conf
  # munge: its own key, socket and files under $DIR (root needs --force).
  [ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none; chmod 600 "$DIR/munge/munge.key"; }
  chmod 700 "$DIR/munge"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
  export SLURM_CONF="$DIR/slurm.conf"
  # -D: stay in the foreground (backgrounded here); -c: clear old state; -i: ignore stale state.
  nohup slurmctld -D -c -i -f "$SLURM_CONF" >"$DIR/log/slurmctld.out" 2>&1 &
  nohup slurmd -D -f "$SLURM_CONF" >"$DIR/log/slurmd.out" 2>&1 &
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'; then
      echo "export SLURM_CONF=$DIR/slurm.conf"; return
    fi
    sleep 0.5
  done
  tail -n 20 "$DIR"/log/*.log >&2 || true
  die "the node did not come up within 30 s; logs are in $DIR/log"
}

stop() {
  # cancel and drain the jobs first: a job step whose slurmd is gone lingers
  if [ -f "$DIR/slurm.conf" ] && [ -f "$DIR/slurmd.pid" ]; then
    export SLURM_CONF="$DIR/slurm.conf"
    scancel --partition=debug 2>/dev/null || true
    for _ in $(seq 40); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && ! pgrep -f "$DIR/spool" >/dev/null && break
      sleep 0.5
    done
  fi
  pkill -f "$DIR/spool" 2>/dev/null || true
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    if [ -f "$DIR/$f" ]; then kill "$(cat "$DIR/$f")" 2>/dev/null || true; rm -f "$DIR/$f"; fi
  done
  echo "slurm_local: stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 install|start|stop" ;;
esac
