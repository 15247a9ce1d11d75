#!/usr/bin/env bash
# Benchmark: `jobpack pack` vs the git CLI baseline (git clone --depth 1 + curl + tar czf), in the
# same run, on the same inputs, all on 127.0.0.1:
#   - a real repository of thousands of files (the Rust sources in the local cargo registry,
#     committed into a fixture repo), served by `git daemon`;
#   - a 200 MB CSV-like data file, served by a local HTTP server.
# Prints each run, the medians and the ratio baseline/jobpack (> 1 means jobpack is faster).
# Usage: scripts/bench-pack.sh [RUNS] [DATA_MB]; JOBPACK=/path/to/jobpack measures that binary
# (say, an earlier build, for a before/after) instead of building this tree's.
set -euo pipefail
RUNS=${1:-3}
DATA_MB=${2:-200}
cd "$(dirname "$0")/.."
if [ -z "${JOBPACK:-}" ]; then
  cargo build --release -q -p jobpack-server
  JOBPACK=$PWD/target/release/jobpack
fi

B=$(mktemp -d /tmp/jobpack-bench.XXXXXX)
cleanup() { kill "${DAEMON:-}" "${HTTP:-}" 2>/dev/null || true; rm -rf "$B"; }
trap cleanup EXIT

# The repository: real source files, at least 3000 of them.
mkdir -p "$B/repos/src"
REG=${CARGO_HOME:-$HOME/.cargo}/registry/src
{ find "$REG" -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.md' -o -name '*.c' -o -name '*.h' \) \
  -size -200k -printf '%P\n' 2>/dev/null || true; } | sort | awk 'NR <= 6000' > "$B/files.txt"
tar -C "$REG" -cf - -T "$B/files.txt" | tar -C "$B/repos/src" -xf -
NFILES=$(find "$B/repos/src" -type f | wc -l)
if [ "$NFILES" -lt 3000 ]; then echo "bench: only $NFILES source files found under $REG" >&2; exit 1; fi
git -C "$B/repos/src" init -q -b main
git -C "$B/repos/src" add -A
GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b \
  git -C "$B/repos/src" commit -q -m bench
COMMIT=$(git -C "$B/repos/src" rev-parse HEAD)
git clone -q --bare "$B/repos/src" "$B/repos/app.git"
git -C "$B/repos/app.git" config uploadpack.allowReachableSHA1InWant true
REPO_MB=$(du -sm "$B/repos/app.git" | cut -f1)

# The data: CSV rows of pseudo-random numbers (compressible, like real tabular data).
mkdir -p "$B/www"
python3 - "$B/www/data.csv" "$DATA_MB" <<'PY'
import random, sys
random.seed(42)
target = int(sys.argv[2]) * 1024 * 1024
with open(sys.argv[1], "w") as f:
    f.write("id,x,y,z,label\n")
    i = 0
    while f.tell() < target:
        rows = []
        for _ in range(10000):
            rows.append(f"{i},{random.random():.6f},{random.gauss(0,1):.6f},{random.randint(0,10**6)},c{random.randint(0,99)}\n")
            i += 1
        f.write("".join(rows))
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GPORT=$(free_port)
git daemon --reuseaddr --listen=127.0.0.1 --port="$GPORT" --base-path="$B/repos" --export-all "$B/repos" \
  >/dev/null 2>&1 & DAEMON=$!
HPORT=$(free_port)
python3 -m http.server "$HPORT" --bind 127.0.0.1 --directory "$B/www" >/dev/null 2>&1 & HTTP=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$GPORT") 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/"$HPORT") 2>/dev/null && break
  sleep 0.1
done
GIT_URL=git://127.0.0.1:$GPORT/app.git
DATA_URL=http://127.0.0.1:$HPORT/data.csv
cat > "$B/spec.json" <<JSON
{"git_url": "$GIT_URL", "commit_hash": "$COMMIT", "data_url": "$DATA_URL", "command": "ls"}
JSON

now() { date +%s.%N; }
baseline() {
  local d=$B/base; rm -rf "$d"; mkdir -p "$d/job/data"
  local t0; t0=$(now)
  git clone -q --depth 1 "$GIT_URL" "$d/job/code"
  rm -rf "$d/job/code/.git"
  curl -sSf -o "$d/job/data/data.csv" "$DATA_URL"
  tar -C "$d/job" -czf "$d/job.tar.gz" .
  echo "$(now) - $t0" | bc
}
jobpack_run() {
  local d=$B/jp; rm -rf "$d"; mkdir -p "$d/work"
  local t0; t0=$(now)
  "$JOBPACK" pack "$B/spec.json" --no-cache --work-dir "$d/work" -o "$d/job.tar.gz" --json >/dev/null
  echo "$(now) - $t0" | bc
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "inputs: $NFILES files (${REPO_MB} MB packed repo) at $COMMIT, ${DATA_MB} MB data, $(nproc) cores"
BASE_T=(); JP_T=()
for i in $(seq "$RUNS"); do
  b=$(baseline); j=$(jobpack_run)
  BASE_T+=("$b"); JP_T+=("$j")
  printf 'run %d: baseline %6.2fs   jobpack %6.2fs\n' "$i" "$b" "$j"
done
BM=$(printf '%s\n' "${BASE_T[@]}" | median)
JM=$(printf '%s\n' "${JP_T[@]}" | median)
printf 'artifact sizes: baseline %s bytes, jobpack %s bytes\n' \
  "$(stat -c %s "$B/base/job.tar.gz")" "$(stat -c %s "$B/jp/job.tar.gz")"
printf 'median: baseline %.2fs, jobpack %.2fs, ratio baseline/jobpack = %.2fx\n' "$BM" "$JM" \
  "$(echo "$BM / $JM" | bc -l)"
