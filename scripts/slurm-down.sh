#!/usr/bin/env bash
# Stops what scripts/slurm-up.sh DIR started.
set -uo pipefail
dir=$(realpath -m "${1:?usage: slurm-down.sh DIR}")
for d in slurmd slurmctld munged; do
  pid=$(cat "$dir/run/$d.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
done
for _ in $(seq 1 50); do
  alive=0
  for d in slurmd slurmctld munged; do
    pid=$(cat "$dir/run/$d.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && alive=1
  done
  [ $alive = 0 ] && exit 0
  sleep 0.1
done
for d in slurmd slurmctld munged; do
  pid=$(cat "$dir/run/$d.pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null
done
exit 0
