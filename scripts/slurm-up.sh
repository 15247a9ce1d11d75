#!/usr/bin/env bash
# Starts a one-node Slurm cluster on loopback for tests: munged, slurmctld and slurmd with every
# file (key, sockets, state, spool, logs, pids) in DIR. Prints the SLURM_CONF to export.
#   scripts/slurm-up.sh DIR        # scripts/slurm-down.sh DIR stops it
# Needs root and Debian's slurm-wlm and munge (scripts/setup.sh --tests installs them).
set -euo pipefail
dir=$(realpath -m "${1:?usage: slurm-up.sh DIR}")
mkdir -p "$dir"/{munge,state,spool,log,run}
chmod 700 "$dir/munge"
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))

# munge: its own key and socket.
if [ ! -s "$dir/munge/munge.key" ]; then
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
fi
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" \
  --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"

cat > "$dir/cgroup.conf" <<CG
CgroupPlugin=cgroup/v1
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
CG
# cgroup v2-only hosts: the v2 plugin.
if [ ! -d /sys/fs/cgroup/memory ]; then sed -i 's#cgroup/v1#cgroup/v2#' "$dir/cgroup.conf"; fi

cat > "$dir/slurm.conf" <<CONF
ClusterName=jobpack-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
SlurmctldPort=46817
SlurmdPort=46818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/cgroup
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=5
OverTimeLimit=0
InactiveLimit=0
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
# A loaded 2-core machine can take a while to register the node: wait up to 60 s, starting slurmd
# again if it died (for instance, it raced slurmctld's start), and show both logs on failure.
for i in $(seq 1 600); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  if (( i % 50 == 0 )); then
    pid=$(cat "$dir/run/slurmd.pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "slurm-up: slurmd is not running after $((i / 10)) s; starting it again" >&2
      slurmd -f "$SLURM_CONF" || true
    fi
  fi
  sleep 0.1
done
echo "slurm-up: the node did not become idle in 60 s; see $dir/log" >&2
sinfo >&2 || true
for f in slurmctld slurmd munged; do
  echo "--- the last lines of $f.log" >&2
  tail -n 25 "$dir/log/$f.log" >&2 || true
done
exit 1
