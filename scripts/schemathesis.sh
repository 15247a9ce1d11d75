#!/usr/bin/env bash
# The API against its own OpenAPI document: schemathesis `--checks all` (every check, stateful
# phase included) against a real `jobpack serve` on 127.0.0.1 with a fresh data directory, a
# bounded number of examples and a fixed seed. A stage of scripts/test.sh; run alone with
# `scripts/schemathesis.sh` (after `scripts/setup.sh --tests`, which installs schemathesis from
# PyPI into .venv). Extra arguments go to `schemathesis run` (e.g. --max-examples 50 --seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."
st="${JOBPACK_VENV:-$PWD/.venv}/bin/schemathesis"
if [ ! -x "$st" ]; then
  echo "schemathesis.sh: $st is missing: run scripts/setup.sh --tests" >&2
  exit 1
fi
cargo build -p jobpack-server --locked --quiet
dir=$(mktemp -d /tmp/jobpack-schemathesis.XXXXXX)
server=""
stop() {
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
token="jp_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
# Jobs the run submits are real: they are packed and run in the sandbox (or fail to fetch).
JOBPACK_ADMIN_TOKEN="$token" target/debug/jobpack serve --listen 127.0.0.1:0 \
  --data-dir "$dir/data" >"$dir/out" 2>"$dir/err" &
server=$!
base=""
for _ in $(seq 100); do
  base=$(sed -n 's/^jobpack listening on //p' "$dir/out")
  [ -n "$base" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "schemathesis.sh: the server did not start" >&2; cat "$dir/err" >&2; exit 1; }
cd "$dir"
cp "$OLDPWD/schemathesis.toml" .
# Each door's document: /v1, and the seeds' doors at their own paths.
"$st" run "$base/openapi.json" --url "$base/v1" -H "Authorization: Bearer $token" \
  --checks all --max-examples 10 --seed 1 --no-color "$@"
"$st" run "$base/openapi/jobd.json" --url "$base" -H "Authorization: Bearer $token" \
  --checks all --max-examples 10 --seed 1 --no-color "$@"
"$st" run "$base/openapi/jobrunner.json" --url "$base" -H "Authorization: Bearer $token" \
  --checks all --max-examples 10 --seed 1 --no-color "$@"
