#!/usr/bin/env bash
# Every performance row, each beside its baseline measured in the same run, as one Markdown
# table (BENCHMARKS.md says what the rows mean and what changed them). As root, for the sandbox.
#
#   scripts/bench.sh            # the full run: release build, real sizes (a quarter of an hour)
#   scripts/bench.sh --smoke    # tiny sizes on the debug build: that the bench runs (test.sh)
#
# Rows: a trivial job's `jobpack run` next to `bwrap --unshare-all` (wall and CPU); 1 GiB to
# stdout captured next to the same job writing a file (and with a secret to mask); a warm
# `jobpack pack` next to a cold one; `jobpack pack` of a large repository and data next to git +
# curl + tar (scripts/bench-pack.sh); the server's rows (benches/service.rs: jobs/s, latency,
# RSS, listing, SSE readers).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true
scripts/setup.sh --bench >/dev/null

B=$(mktemp -d /tmp/jobpack-bench.XXXXXX)
cleanup() { kill "${HTTP:-}" 2>/dev/null || true; rm -rf "$B"; }
trap cleanup EXIT
if $smoke; then
  runs=3; log_mb=16; cargo build -q --locked -p jobpack-server; jp=$PWD/target/debug/jobpack
else
  runs=15; log_mb=1024; cargo build -q --locked --release -p jobpack-server
  # A copy: `cargo bench` below links its own jobpack into target/release too (the bench
  # profile's, whose functions are named differently, so the release build's code layout,
  # jobpack-server/build.rs, would not apply). Every row measures the build users run.
  jp=$B/jobpack
  cp target/release/jobpack "$jp"
fi
pair() { python3 scripts/bench_pair.py "$@"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
$smoke || python3 scripts/link_order.py --check "$jp" jobpack-server/link-order.txt
echo
# The server's rows first, before the rows below remove thousands of files: on ext4 without a
# journal (this project's machines) each file created in the next minutes first walks past every
# inode freed in that time (the kernel's recently_deleted()), and jobs/s then measures that
# (BENCHMARKS.md: 123 jobs/s on a quiet disk, 78 a minute after 42,000 files were removed).
if $smoke; then
  BENCH_SMOKE=1 cargo test -q --locked -p jobpack-server --bench service
else
  JOBPACK_BIN=$jp cargo bench -q --locked -p jobpack-server --bench service
fi
echo
echo "| what | jobpack | baseline (same run) | ratio |"
echo "|---|---|---|---|"

# A trivial job, unpacked once: the sandbox's own cost, next to bubblewrap's for the same job.
mkdir -p "$B/code" "$B/job"
printf 'command: "true"\n' > "$B/true.yaml"
"$jp" pack "$B/true.yaml" --code "$B/code" -o "$B/true.tar.gz" --no-cache >/dev/null 2>&1
tar -C "$B/job" -xzf "$B/true.tar.gz"
bwrap_job="bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin \
  --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --ro-bind /etc /etc \
  --proc /proc --dev /dev --tmpfs /tmp --bind $B/job /job --chdir /job ./run.sh"
pair "a trivial job: \`jobpack run DIR\` vs \`bwrap --unshare-all\`" "$((runs * 4))" \
  "$jp run $B/job" "$bwrap_job"

# Log capture: the same job writing to stdout (captured, a log file) and to a file.
for what in stdout file; do
  mkdir -p "$B/log-$what"
  if [ $what = stdout ]; then cmd="head -c ${log_mb}M /dev/zero"; else cmd="head -c ${log_mb}M /dev/zero > out"; fi
  printf 'command: "%s"\n' "$cmd" > "$B/log-$what.yaml"
  "$jp" pack "$B/log-$what.yaml" --code "$B/code" -o "$B/log-$what.tar.gz" --no-cache >/dev/null 2>&1
  tar -C "$B/log-$what" -xzf "$B/log-$what.tar.gz"
done
limit=$((log_mb * 2))
pair "${log_mb} MiB to stdout, captured, vs the job writing a file" "$runs" \
  "$jp run $B/log-stdout --max-log-mb $limit" "$jp run $B/log-file --max-log-mb $limit"
pair "${log_mb} MiB to stdout with a secret to mask, vs the job writing a file" "$runs" \
  "$jp run $B/log-stdout --max-log-mb $limit --secret-env TOKEN=s3cr3t-value" \
  "$jp run $B/log-file --max-log-mb $limit"

# A warm pack (the repository and the data in the cache) next to a cold one, of this very
# repository at its HEAD and a data file on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$B/www"
head -c $((log_mb * 64 * 1024)) /dev/urandom > "$B/www/data.bin"
HPORT=$(free_port)
python3 -m http.server "$HPORT" --bind 127.0.0.1 --directory "$B/www" >/dev/null 2>&1 & HTTP=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HPORT/data.bin" -o /dev/null && break; sleep 0.1; done
git clone -q --bare . "$B/self.git"
# Every input pinned (the full commit, the data's sha256), as a reproducible spec is.
printf 'git_url: "file://%s"\ncommit_hash: "%s"\ndata: [{url: "http://127.0.0.1:%s/data.bin", sha256: "%s"}]\ncommand: "true"\n' \
  "$B/self.git" "$(git rev-parse HEAD)" "$HPORT" "$(sha256sum "$B/www/data.bin" | cut -d' ' -f1)" > "$B/self.yaml"
"$jp" pack "$B/self.yaml" -o "$B/warm.tar.gz" --cache-dir "$B/warm-cache" >/dev/null 2>&1
pair "a second \`jobpack pack\` of the same spec (warm cache) vs the first (cold)" "$runs" \
  "$jp pack $B/self.yaml -o $B/warm.tar.gz --cache-dir $B/warm-cache" \
  "sh -c 'rm -rf $B/cold-cache; exec $jp pack $B/self.yaml -o $B/cold.tar.gz --cache-dir $B/cold-cache'"
cmp -s "$B/warm.tar.gz" "$B/cold.tar.gz" || { echo "bench: the warm and cold artifacts differ" >&2; exit 1; }

# The large pack against git + curl + tar (its own fixture and table).
if ! $smoke; then
  echo
  JOBPACK=$jp scripts/bench-pack.sh 3 200
fi

