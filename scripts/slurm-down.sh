#!/usr/bin/env bash
# Stops what scripts/slurm-up.sh DIR started, and waits until the daemons are gone.
set -uo pipefail
dir=$(realpath -m "${1:?usage: slurm-down.sh DIR}")
pids=()
for d in slurmd slurmctld munged; do
  pid=$(cat "$dir/run/$d.pid" 2>/dev/null) && pids+=("$pid")
done
[ ${#pids[@]} -eq 0 ] && exit 0
kill "${pids[@]}" 2>/dev/null
for _ in $(seq 1 100); do
  kill -0 "${pids[@]}" 2>/dev/null || exit 0
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && exit 0
  sleep 0.1
done
kill -9 "${pids[@]}" 2>/dev/null
exit 0
